import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import cfg, small, tiny_data
from torch.utils._python_dispatch import TorchDispatchMode

from reslab import files, runs
from reslab.checkpoints import load_checkpoint
from reslab.config import TrainConfig
from reslab.errors import UserError
from reslab.schedule import Schedule
from reslab.train import Diverged, setup, total_iterations, train


def test_paper_schedule_in_iterations():
    cfg = TrainConfig()
    assert total_iterations(cfg, 390) == 64_000
    paper = Schedule(0.1, 64_000, milestones=(32_000, 48_000))
    assert [paper.lr_at(i) for i in (0, 31_999, 32_000, 47_999, 48_000, 63_999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )


def test_short_runs_move_the_drops_proportionally(tmp_path):
    run, config = setup(small(iterations=None, epochs=10), tmp_path, tiny_data())
    assert run.steps_per_epoch == 8 and run.total == 80
    assert config.resolved.milestones == [40, 60]
    run, _ = setup(small(iterations=None, scale=0.5), tmp_path, tiny_data())
    assert run.total == 32_000 and run.schedule.milestones == (16_000, 24_000)


def test_warmup_is_on_by_default_from_depth_110_only(tmp_path):
    assert setup(small(depth=110), tmp_path, tiny_data())[0].schedule.low_lr_start
    assert not setup(small(depth=56), tmp_path, tiny_data())[0].schedule.low_lr_start


def test_run_directory_contents(tmp_path):
    row = train(small(), tmp_path / "r", data=tiny_data(), progress=False)
    d = tmp_path / "r"
    assert {p.name for p in d.iterdir()} >= {
        "config.json",
        "metrics.csv",
        "checkpoint.pt",
        "model.safetensors",
        "status.json",
    }
    assert runs.read_status(d)["state"] == "finished"
    rows = runs.read_metrics(d)
    assert [r["iteration"] for r in rows] == [6, 12, 18, 24]
    assert all(0 <= r["train_error"] <= 1 and 0 <= r["test_error"] <= 1 for r in rows)
    assert rows[-1]["test_error"] == row["test_error"]
    config = files.read_json(d / "config.json")
    assert config["resolved"]["parameters"] > 0 and config["environment"]["torch"] == torch.__version__
    ckpt = load_checkpoint(d / "checkpoint.pt")  # weights_only=True
    assert ckpt["iteration"] == 24


def test_training_learns(tmp_path):
    row = train(small(iterations=60), tmp_path / "r", data=tiny_data(), progress=False)
    assert row["train_error"] < 0.5 and row["test_error"] < 0.5  # chance is 0.9


def test_warmup_ends_and_returns_to_base_lr(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reslab")
    train(small(warmup="on", iterations=60, eval_every=10), tmp_path / "r", data=tiny_data(), progress=False)
    ended = [m for m in caplog.messages if "low-lr start ended" in m]
    assert len(ended) == 1
    lrs = [r["lr"] for r in runs.read_metrics(tmp_path / "r")]
    assert lrs[0] == pytest.approx(0.01)  # warming up
    assert pytest.approx(0.1) in lrs  # back to 0.1 once the training error is below 80%
    assert lrs[-1] == pytest.approx(0.001)  # and the usual drops after that


def test_same_seed_same_run(tmp_path):
    a = train(small(), tmp_path / "a", data=tiny_data(), progress=False)
    b = train(small(), tmp_path / "b", data=tiny_data(), progress=False)
    assert a["train_loss"] == b["train_loss"] and a["test_error"] == b["test_error"]


def test_output_directory_holding_another_run_is_refused(tmp_path):
    train(small(), tmp_path / "r", data=tiny_data(), progress=False)
    with pytest.raises(UserError, match="other settings"):
        train(small(depth=14), tmp_path / "r", data=tiny_data(), progress=False)
    with pytest.raises(UserError, match="--resume"):
        train(small(), tmp_path / "r", data=tiny_data(), progress=False)


def comparable(rows):
    return [{k: v for k, v in r.items() if k not in runs.TIMING_FIELDS} for r in rows]


def weights(d):
    from safetensors.torch import load_file

    return load_file(d / "model.safetensors")


TRAIN = [
    "train",
    "--arch",
    "resnet",
    "--depth",
    "8",
    "--dataset",
    "digits",
    "--iterations",
    "60",
    "--eval-every",
    "7",
    "--batch-size",
    "64",
    "--precision",
    "fp32",
    "--no-progress",
    "--augment",
    "on",
]


def start(out):
    return subprocess.Popen(
        [sys.executable, "-m", "reslab", *TRAIN, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(out, proc, after=0):
    t0 = time.time()
    while time.time() - t0 < 120 and proc.poll() is None:
        if (out / "checkpoint.pt").exists() and len(runs.read_metrics(out)) > after:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_interrupted_run_resumes_exactly(tmp_path, cli, how):
    ref = cli(*TRAIN, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "cut"
    proc = start(out)
    assert wait_for_checkpoint(out, proc, after=1)
    proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    if how == "sigint":
        assert proc.returncode == 130 and "--resume" in err
        assert runs.read_status(out)["state"] == "interrupted"
    resumed = cli(*TRAIN, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(runs.read_metrics(out)) == comparable(runs.read_metrics(tmp_path / "ref"))
    a, b = weights(out), weights(tmp_path / "ref")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_divergence_stops_with_status_and_keeps_the_last_good_checkpoint(tmp_path):
    from reslab.train import Diverged

    out = tmp_path / "r"
    # Warm-up at lr 0.01 trains normally; once it ends, lr 1e9 makes the loss blow up.
    cfg = small(iterations=200, eval_every=10, lr=1e9, warmup="on")
    with pytest.raises(Diverged, match=r"NaN or infinite at iteration \d+; the last good checkpoint"):
        train(cfg, out, data=tiny_data(), progress=False)
    status = runs.read_status(out)
    assert status["state"] == "diverged"
    good = int(status["message"].split("(iteration ")[1].split(")")[0])
    bad = int(status["message"].split("at iteration ")[1].split(";")[0])
    assert 0 < good < bad <= good + 10
    kept = load_checkpoint(out / "checkpoint.pt")
    assert kept["iteration"] == good
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert [r["iteration"] for r in runs.read_metrics(out)][-1] == good
    assert not (out / "model.safetensors").exists()


def test_experiment_directory_is_locked(tmp_path):
    from reslab.experiment import experiment_lock

    with experiment_lock(tmp_path):
        with pytest.raises(UserError, match="another reslab process"):
            with experiment_lock(tmp_path):
                pass
    with runs.run_lock(tmp_path / "run"):
        with pytest.raises(UserError, match="another process is writing"):
            train(small(), tmp_path / "run", data=tiny_data(), progress=False)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):

    ref = train(small(), tmp_path / "ref", data=tiny_data(), progress=False)
    out = tmp_path / "r"
    real_fsync, calls = os.fsync, []

    def fills_up(fd):  # config, metrics, status, then checkpoint, metrics, status @6 fit; then the disk is full
        calls.append(fd)
        if len(calls) > 6:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fills_up)
    with pytest.raises(files.WriteError, match="checkpoint.pt .No space left on device.*previous version of it is"):
        train(small(), out, data=tiny_data(), progress=False)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 6  # the previous checkpoint, intact
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no half-written files
    row = train(small(), out, resume=True, data=tiny_data(), progress=False)
    assert row["train_loss"] == ref["train_loss"] and row["test_error"] == ref["test_error"]


def test_resume_removes_what_a_killed_writer_left(tmp_path):
    out = tmp_path / "r"
    train(small(iterations=12), out, data=tiny_data(), progress=False)
    runs.write_status(out, "interrupted")
    stale = out / f"{files.TMP_PREFIX}checkpoint.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    train(small(iterations=12), out, resume=True, data=tiny_data(), progress=False)
    assert not stale.exists()
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 12


class SyncCounter(TorchDispatchMode):
    """Counts the operations that make the host wait for a GPU: reading a value back
    (.item(), bool(), float(): item or _local_scalar_dense) and those whose output size depends
    on the data. On a CPU nothing waits, but the same operations run, so counting them checks
    the training loop's GPU promise without a GPU. tolist() and .cpu() do not pass through
    here; gpu_check's host_syncs phase catches those on a GPU."""

    SYNCING = {"item", "_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "unique_consecutive"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.SYNCING:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "static"])
def test_training_steps_do_not_wait_on_the_device(tmp_path, monkeypatch, graphs):
    """Runs of N and 2N iterations with one evaluation each: the host reads values back in the
    evaluation (twice), and not once in the N steps more; nor does the static step a CUDA graph
    records (a read-back inside it would break the recording)."""
    from reslab import step

    monkeypatch.setattr(step, "resolve", lambda *a: graphs)
    counts = []
    for n in (16, 32):
        with SyncCounter() as counter:
            train(small(iterations=n, eval_every=n), tmp_path / str(n), data=tiny_data(), progress=False)
        counts.append(counter.count)
    assert counts[0] > 0  # the counter sees the evaluation's reads
    assert counts[1] == counts[0]


# ---------------------------------------------------------------------------------------------
# 3. divergence never keeps a NaN checkpoint


def test_divergence_keeps_only_finite_checkpoints(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(Diverged) as e:
        train(cfg(iterations=40, eval_every=1, lr=1e6), out, progress=False)
    assert "diverged" in runs.read_status(out)["state"]
    if (out / "checkpoint.pt").exists():
        saved = torch.load(out / "checkpoint.pt", weights_only=True)
        bad = [k for k, v in saved["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
        assert bad == []
        assert f"iteration {saved['iteration']})" in str(e.value)


# ---------------------------------------------------------------------------------------------
# 11. a newcomer is told how long a run will be before it starts


def test_the_papers_length_on_a_small_dataset_is_said_before_training(tmp_path):
    from reslab.train import plan_text, setup

    run, _ = setup(TrainConfig(dataset="digits", device="cpu"), tmp_path / "r")
    text = plan_text(run)
    assert "64,000 iterations" in text and "5,818.2 epochs of 1,438 training images" in text
    assert "shorten it with --epochs" in text
    short, _ = setup(TrainConfig(dataset="digits", device="cpu", epochs=3), tmp_path / "s")
    assert "shorten" not in plan_text(short) and "33 iterations" in plan_text(short)


def test_the_journal_writes_on_rank_0_only(tmp_path):
    """Every write of the loop goes through the Journal: on rank 0 it writes status, metrics,
    checkpoint and weights; on the other ranks of a torchrun it writes nothing at all."""
    from types import SimpleNamespace

    from reslab.train import Journal

    ts = SimpleNamespace(iteration=3, rows=[], model=None, capture=None)
    for rank, out in ((1, tmp_path / "rank1"), (0, tmp_path / "rank0")):
        out.mkdir()
        plan = SimpleNamespace(out=out, group=SimpleNamespace(main=rank == 0), total=10, steps_per_epoch=5)
        journal = Journal(plan)
        journal.status("running", iteration=3)
        journal.metrics(ts.rows)
        if rank:
            journal.checkpoint(ts)  # would fail on rank 0: this ts cannot be captured
            journal.finished(ts)
    assert list((tmp_path / "rank1").iterdir()) == []
    status = runs.read_status(tmp_path / "rank0")
    assert (status["state"], status["iteration"], status["total"]) == ("running", 3, 10) and "pid" in status
