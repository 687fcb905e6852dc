"""Results a user can trust, files that are never lost, bad input that gets one sentence: each
case here was reproduced on an earlier version (issue 15) and failed there."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from reslab import runs
from reslab.cli import main
from reslab.config import TrainConfig
from reslab.errors import UserError
from reslab.experiment import LocalBackend, grid, run_experiment
from reslab.runs import gather
from reslab.train import Diverged, train

EXP_QUICK = ["--dataset", "digits", "--iterations", "4", "--batch-size", "32"]
QUICK = [*EXP_QUICK, "--no-progress"]
quiet = lambda *_: None  # noqa: E731


def cfg(**kw):
    base = dict(dataset="digits", iterations=4, batch_size=32, precision="fp32", device="cpu", arch="plain", depth=8)
    return TrainConfig(**{**base, **kw})


def refused(capsys, argv, *phrases):
    """The CLI says one sentence and exits 2 (an uncaught exception fails the test with its traceback)."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    for p in phrases:
        assert p in err, err
    return err


# ---------------------------------------------------------------------------------------------
# 1. re-running with changed settings never shows the old results


def test_experiment_rerun_with_other_settings_is_refused_then_overwritten(tmp_path):
    first = grid(cfg(), ["plain"], [8], [0])
    run_experiment(tmp_path, first, backend=LocalBackend(1), log=quiet)
    changed = grid(cfg(iterations=6), ["plain"], [8], [0])
    with pytest.raises(UserError, match="iterations 4 there, 6 asked"):
        run_experiment(tmp_path, changed, backend=LocalBackend(1), log=quiet)
    assert runs.read_metrics(tmp_path / "plain-8-seed0")[-1]["iteration"] == 4  # untouched
    out = run_experiment(tmp_path, changed, backend=LocalBackend(1), log=quiet, overwrite=True)
    assert out[0].state == "finished" and not out[0].skipped
    assert runs.read_metrics(tmp_path / "plain-8-seed0")[-1]["iteration"] == 6


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--dataset", "synthetic", "--iterations", "4"], "dataset"),
        (["--dataset", "digits", "--iterations", "4", "--shortcut", "B"], "shortcut"),
        (["--dataset", "digits", "--iterations", "6"], "iterations"),
    ],
)
def test_cli_experiment_with_other_settings_names_them(capsys, tmp_path, flags, named):
    args = ["experiment", "degradation", "--archs", "resnet", "--depths", "8", "--batch-size", "32"]
    out = ["--out", tmp_path / "e"]
    assert main([str(a) for a in args + ["--dataset", "digits", "--iterations", "4"] + out]) == 0
    capsys.readouterr()
    refused(capsys, args + flags + out, "other settings", named, "--overwrite")


def test_train_into_a_run_with_other_settings_names_the_difference(capsys, tmp_path):
    assert main(["train", "--depth", "8", *QUICK, "--out", str(tmp_path / "r")]) == 0
    refused(capsys, ["train", "--depth", "8", *QUICK, "--lr", "0.05", "--out", tmp_path / "r"], "lr 0.1 there, 0.05")


# ---------------------------------------------------------------------------------------------
# 2. unrelated runs are never mixed into one table


def test_train_into_an_experiment_directory_is_refused(capsys, tmp_path):
    run_experiment(tmp_path / "demo", grid(cfg(), ["plain"], [8], [0]), backend=LocalBackend(1), log=quiet)
    refused(capsys, ["train", "--depth", "8", *QUICK, "--out", tmp_path / "demo"], "experiment directory")


def test_report_leaves_out_runs_that_do_not_belong(tmp_path):
    exp = tmp_path / "exp"
    run_experiment(exp, grid(cfg(), ["plain", "resnet"], [8], [0]), backend=LocalBackend(1), log=quiet)
    train(cfg(arch="resnet", depth=14), exp / "stranger", log=quiet, progress=False)  # not a cell
    together, skipped = gather(exp)
    assert sorted(r.name for r in together) == ["plain-8-seed0", "resnet-8-seed0"]
    assert skipped == [("stranger", "not a cell of this experiment (see its experiment.json)")]

    folder = tmp_path / "runs"  # no experiment.json: the runs sharing the most common recipe
    for name, c in [("a", cfg()), ("b", cfg(arch="resnet")), ("c", cfg(dataset="synthetic"))]:
        train(c, folder / name, log=quiet, progress=False)
    together, skipped = gather(folder)
    assert [r.name for r in together] == ["a", "b"]
    assert skipped[0][0] == "c" and "dataset 'digits' in the others, 'synthetic' here" in skipped[0][1]
    from reslab.report import build_report

    html = build_report(folder)
    assert "Runs left out" in html and "synthetic" in html


def test_analysis_of_a_standalone_run_stays_in_that_run(tmp_path):
    from reslab.analysis import load

    train(cfg(), tmp_path / "mine", log=quiet, progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    load("responses").analyze([tmp_path / "mine"])
    assert (tmp_path / "mine" / "analyses" / "responses.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]


# ---------------------------------------------------------------------------------------------
# 3. divergence never keeps a NaN checkpoint


def test_divergence_keeps_only_finite_checkpoints(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(Diverged) as e:
        train(cfg(iterations=40, eval_every=1, lr=1e6), out, log=quiet, progress=False)
    assert "diverged" in runs.read_status(out)["state"]
    if (out / "checkpoint.pt").exists():
        saved = torch.load(out / "checkpoint.pt", weights_only=True)
        bad = [k for k, v in saved["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
        assert bad == []
        assert f"iteration {saved['iteration']})" in str(e.value)


def test_diverged_cell_verdict_does_not_say_run_it_again():
    from reslab.verdicts import next_step

    assert "run the same command again" not in next_step("diverged") and "--lr" in next_step("diverged")
    assert "run the same command again" in next_step("interrupted")


# ---------------------------------------------------------------------------------------------
# 4. unfinished runs are named as such


def test_eval_of_an_interrupted_run_says_so(capsys, tmp_path):
    out = tmp_path / "r"
    assert main(["train", "--depth", "8", *QUICK, "--out", str(out)]) == 0
    runs.write_status(out, "interrupted", iteration=2, total=4)
    (out / "model.safetensors").unlink()
    assert main(["eval", str(out)]) == 0
    assert "is not a finished run (it is interrupted at iteration 2 of 4)" in capsys.readouterr().err


def test_resume_of_a_missing_run_is_refused(capsys, tmp_path):
    refused(capsys, ["train", "--depth", "8", *QUICK, "--out", tmp_path / "typo", "--resume"], "no run to resume")
    assert not (tmp_path / "typo").exists()


# ---------------------------------------------------------------------------------------------
# 5. image folders: 16-bit images and edited files


def image_folder(root, make):
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                make(root / split / c / f"{i}.png", i)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from reslab.data import load_image_folder

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    image_folder(tmp_path / "f", lambda p, i: Image.fromarray(ramp).save(p))
    x = load_image_folder(tmp_path / "f").train_x
    assert x.shape[1:] == (1, 64, 64)
    assert float((x == 255).float().mean()) < 0.01  # was 99.9% before: clipped at 255
    assert abs(float(x.float().mean()) - 127.5) < 1


def test_an_edited_image_of_the_same_size_is_decoded_again(tmp_path):
    from PIL import Image

    from reslab.data import load_image_folder

    image_folder(tmp_path / "f", lambda p, i: Image.new("L", (8, 8), 10).save(p))
    assert int(load_image_folder(tmp_path / "f").train_x.max()) == 10
    target = tmp_path / "f" / "train" / "a" / "0.png"
    size = target.stat().st_size
    Image.new("L", (8, 8), 200).save(target)
    assert target.stat().st_size == size  # same name, same size: only the content changed
    assert int(load_image_folder(tmp_path / "f").train_x.max()) == 200


def test_image_folder_links_and_bombs_get_a_sentence(tmp_path):
    from PIL import Image

    from reslab.data import load_image_folder

    image_folder(tmp_path / "f", lambda p, i: Image.new("L", (8, 8), 10).save(p))
    os.symlink(tmp_path / "nowhere.png", tmp_path / "f" / "train" / "a" / "dangling.png")
    with pytest.raises(UserError, match="broken or looping link"):
        load_image_folder(tmp_path / "f")
    (tmp_path / "f" / "train" / "a" / "dangling.png").unlink()
    os.symlink("loop.png", tmp_path / "f" / "train" / "a" / "loop.png")
    with pytest.raises(UserError, match="broken or looping link"):
        load_image_folder(tmp_path / "f")
    (tmp_path / "f" / "train" / "a" / "loop.png").unlink()
    Image.new("1", (20000, 20000)).save(tmp_path / "f" / "train" / "a" / "0.png")  # 400 Mpixel, a few KB
    with pytest.raises(UserError, match="decompression bomb"):
        load_image_folder(tmp_path / "f")


# ---------------------------------------------------------------------------------------------
# 6. a user's files are never overwritten or deleted


@pytest.mark.parametrize("command", ["train", "experiment", "import"])
def test_a_directory_of_the_users_files_is_refused(capsys, tmp_path, command):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("metrics.csv", "status.json", "report.html", ".draft.tmp", "summary.csv"):
        (mine / name).write_text("my own words")
    argv = {
        "train": ["train", "--depth", "8", *QUICK, "--out", mine],
        "experiment": ["experiment", "degradation", "--depths", "8", *EXP_QUICK, "--out", mine],
        "import": ["import", tmp_path / "x.th", "--out", mine],
    }[command]
    if command == "import":
        torch.save({"state_dict": {}}, tmp_path / "x.th")
    refused(capsys, argv, str(mine))
    assert sorted(p.name for p in mine.iterdir()) == sorted(
        ["metrics.csv", "status.json", "report.html", ".draft.tmp", "summary.csv"]
    )
    assert all(p.read_text() == "my own words" for p in mine.iterdir())


def test_out_that_is_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    refused(capsys, ["train", "--depth", "8", *QUICK, "--out", tmp_path / "f"], "is a file")
    refused(capsys, ["experiment", "degradation", "--depths", "8", *EXP_QUICK, "--out", tmp_path / "f"], "is a file")


def test_only_reslabs_own_temporary_files_are_cleaned_up(tmp_path):
    out = tmp_path / "r"
    train(cfg(), out, log=quiet, progress=False)
    (out / ".notes.tmp").write_text("mine")
    (out / f"{runs.TMP_PREFIX}metrics.csv.abc.tmp").write_text("left by a killed writer")
    runs.write_status(out, "interrupted")
    train(cfg(), out, resume=True, log=quiet, progress=False)
    assert (out / ".notes.tmp").read_text() == "mine"
    assert not (out / f"{runs.TMP_PREFIX}metrics.csv.abc.tmp").exists()


# ---------------------------------------------------------------------------------------------
# 7. locks and atomic figures


def test_import_is_refused_while_another_process_writes_the_directory(tmp_path):
    from test_pretrained import RefResNet, save_like_original

    from reslab.pretrained import import_checkpoint

    path = tmp_path / "resnet8.th"
    save_like_original(RefResNet(1), path)
    with runs.run_lock(tmp_path / "r"):  # as a training run holds it
        with pytest.raises(runs.Locked):
            import_checkpoint(path, tmp_path / "r")
    assert not (tmp_path / "r" / "config.json").exists()


def test_experiment_leaves_a_cell_locked_by_another_process_alone(tmp_path):
    cells = grid(cfg(), ["plain"], [8], [0])
    cell = tmp_path / "plain-8-seed0"
    train(cells[0], cell, log=quiet, progress=False)
    runs.write_status(cell, "running", iteration=2, total=4, pid=1)
    before = (cell / "status.json").read_text()
    with runs.run_lock(cell):
        out = run_experiment(tmp_path, cells, backend=LocalBackend(1), log=quiet)
    assert out[0].state == "busy"
    assert (cell / "status.json").read_text() == before


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from reslab import plots

    fig = plt.figure()
    plots.save(fig, tmp_path / "f")
    before = (tmp_path / "f.png").read_bytes()

    def disk_full(path, data):
        raise runs.WriteError("disk full")

    monkeypatch.setattr(runs, "atomic_write_bytes", disk_full)
    with pytest.raises(runs.WriteError):
        plots.save(plt.figure(figsize=(9, 2)), tmp_path / "f")
    assert (tmp_path / "f.png").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# 9. the report escapes every value from disk

CRAFTED = "<script>document.title='pwned'</script>"


def crafted_experiment(root):
    from test_experiment import fake_run

    fake_run(root, "plain", 8, 0, [0.5, 0.4], 0.5)
    fake_run(root, "resnet", 8, 0, [0.5, 0.3], 0.4)
    a = root / "analyses"
    runs.write_json(a / "lesion.json", {"images": CRAFTED, "samples": CRAFTED, "runs": []})
    runs.write_json(
        a / "gradients.json",
        {"images": CRAFTED, "points": CRAFTED, "lines": CRAFTED, "runs": [], "shattering": {"rows": []}},
    )
    runs.write_json(
        a / "landscape.json",
        {
            "images": CRAFTED,
            "resolution": CRAFTED,
            "span": CRAFTED,
            "runs": [{"label": "x", "axis": [0], "grid": [[1.0]], "local_minima": CRAFTED}],
        },
    )
    runs.write_json(
        a / "construct.json",
        {
            "results": [
                {
                    "arch": "plain",
                    "depth": 14,
                    "source_label": "plain-8",
                    "identity_blocks": CRAFTED,
                    "max_abs_difference": 0.0,
                    "source_train_error": 0.1,
                    "constructed_train_error": 0.1,
                }
            ]
        },
    )
    runs.write_json(
        a / "identity.json",
        {"steps": 1, "plain": [{"k": CRAFTED, "error": 1.0}], "residual": [{"k": CRAFTED, "error": 0.1}]},
    )
    runs.write_json(a / "responses.json", {"images": 5, "split": "test", "runs": "not a list", "findings": []})


def test_report_escapes_crafted_analysis_files(tmp_path):
    from reslab.report import build_report

    crafted_experiment(tmp_path)
    html = build_report(tmp_path)
    assert "<script" not in html
    assert html.count("&lt;script&gt;") >= 8
    assert "analyses/responses.json could not be shown" in html


def test_report_escapes_crafted_files_in_a_real_browser(tmp_path):
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium here (apt-get install chromium) to open the crafted report in")
    from reslab.report import write_report

    crafted_experiment(tmp_path)
    page = write_report(tmp_path)
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "<title>" in dom and "pwned" not in dom.split("</title>")[0]


# ---------------------------------------------------------------------------------------------
# 10. one sentence and exit 2, never a traceback


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "r"
    train(cfg(), out, log=quiet, progress=False)
    return out


def copy_run(trained, tmp_path):
    import shutil

    shutil.copytree(trained, tmp_path / "r")
    return tmp_path / "r"


@pytest.mark.parametrize(
    "checkpoint",
    [{}, {"model": {}, "optimizer": {}}, "shapes"],
    ids=["empty", "missing-keys", "wrong-shapes"],
)
def test_wrongly_shaped_checkpoints(capsys, tmp_path, trained, checkpoint):
    run = copy_run(trained, tmp_path)
    if checkpoint == "shapes":
        saved = torch.load(run / "checkpoint.pt", weights_only=True)
        saved["model"] = {k: torch.zeros(3) for k in saved["model"]}
        checkpoint = saved
    torch.save(checkpoint, run / "checkpoint.pt")
    runs.write_status(run, "interrupted")
    refused(
        capsys,
        ["train", "--depth", "8", "--arch", "plain", *QUICK, "--precision", "fp32", "--out", run, "--resume"],
        "checkpoint.pt",
    )
    (run / "model.safetensors").unlink()
    refused(capsys, ["eval", run], str(run))


def test_wrongly_shaped_weights_on_eval(capsys, tmp_path, trained):
    from safetensors.torch import save_file

    run = copy_run(trained, tmp_path)
    save_file({"conv1.weight": torch.zeros(2, 2)}, run / "model.safetensors")
    refused(capsys, ["eval", run], "do not fit")


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["model"].update(depth="8"),
        lambda c: c.pop("model"),
        lambda c: c["resolved"].update(parameters="many"),
        lambda c: c["model"].update(depth=1_200_002),
    ],
    ids=["depth-a-string", "no-model", "parameters-a-string", "huge-depth"],
)
@pytest.mark.parametrize("command", ["eval", "report", "analyze"])
def test_damaged_config(capsys, tmp_path, trained, change, command):
    run = copy_run(trained, tmp_path)
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))
    argv = {"eval": ["eval", run], "report": ["report", run], "analyze": ["analyze", "lesion", run]}[command]
    refused(capsys, argv, "config.json")  # a depth no network of reslab's has is refused on reading, too


@pytest.mark.parametrize(
    "content",
    ["garbage\x00\x01", "epoch,iteration\n1", "TRUNCATED", "EXTRA"],
    ids=["binary", "other-columns", "truncated-row", "extra-column"],
)
def test_damaged_metrics(capsys, tmp_path, trained, content):
    run = copy_run(trained, tmp_path)
    text = (run / "metrics.csv").read_text()
    content = {"TRUNCATED": text.rsplit(",", 3)[0], "EXTRA": text.rstrip("\n") + ",7\n"}.get(content, content)
    (run / "metrics.csv").write_text(content)
    refused(capsys, ["report", run], "metrics.csv")


def test_empty_status_file(capsys, tmp_path, trained):
    run = copy_run(trained, tmp_path)
    (run / "status.json").write_text("{}")
    refused(capsys, ["report", run], "status.json")
    refused(
        capsys,
        ["train", "--depth", "8", "--arch", "plain", *QUICK, "--precision", "fp32", "--out", run, "--resume"],
        "status.json",
    )


@pytest.mark.parametrize(
    "flags,phrase",
    [
        (["--momentum", "-1"], "--momentum"),
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--lr", "nan"], "--lr"),
        (["--seed", str(2**70)], "--seed"),
        (["--device", "meta"], "meta"),
        (["--width", "100000"], "million"),
        (["--depth", "1200002"], "million"),
    ],
)
def test_bad_training_options(capsys, tmp_path, flags, phrase):
    base = ["train", "--depth", "8", "--dataset", "digits", "--batch-size", "32", "--no-progress"]
    refused(capsys, base + ["--epochs", "inf", "--out", tmp_path / "r"], "--epochs")
    refused(capsys, base + ["--iterations", "4", *flags, "--out", tmp_path / "r"], phrase)
    assert not (tmp_path / "r").exists()


def test_train_config_with_wrong_types(capsys, tmp_path, trained):
    config = json.loads((trained / "config.json").read_text())
    config["train"]["depth"] = "20"
    (tmp_path / "c.json").write_text(json.dumps(config))
    refused(capsys, ["train", "--config", tmp_path / "c.json", "--out", tmp_path / "r"], "depth")
    (tmp_path / "c.json").write_text("[1, 2]")
    refused(capsys, ["train", "--config", tmp_path / "c.json", "--out", tmp_path / "r"], "not a reslab config.json")


def test_import_of_odd_files(capsys, tmp_path):
    torch.save({"state_dict": {"conv1.weight": 3}}, tmp_path / "values.th")
    refused(capsys, ["import", tmp_path / "values.th", "--out", tmp_path / "a"], "not tensors")
    torch.save({"conv1.weight": torch.tensor(1.0), "linear.weight": torch.tensor(2.0)}, tmp_path / "scalars.th")
    refused(capsys, ["import", tmp_path / "scalars.th", "--out", tmp_path / "b"], "dimensions")


def test_small_crafted_checkpoint_is_refused_before_building(capsys, tmp_path):
    import time

    state = {
        "conv1.weight": torch.zeros(16, 3, 3, 3),
        "linear.weight": torch.zeros(10, 64),
        "layer1.3000.conv1.weight": torch.zeros(1),
    }
    torch.save({"state_dict": state}, tmp_path / "crafted.th")
    t0 = time.perf_counter()
    refused(capsys, ["import", tmp_path / "crafted.th", "--out", tmp_path / "a"], "numbered 0..n-1")
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize(
    "flags,phrase",
    [(["--resolution", "1"], "--resolution"), (["--resolution", "4"], "odd"), (["--span", "nan"], "--span")],
)
def test_bad_landscape_options(capsys, trained, flags, phrase):
    refused(capsys, ["analyze", "landscape", trained, *flags], phrase)


def test_unwritable_output(capsys, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere on disk; /proc refuses even root
        target = Path("/proc/reslab-unwritable")
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        target = tmp_path / "ro" / "r"
    refused(capsys, ["train", "--depth", "8", *QUICK, "--out", target], "cannot write")
    refused(capsys, ["experiment", "degradation", "--depths", "8", *EXP_QUICK, "--out", target], "cannot write")


# ---------------------------------------------------------------------------------------------
# issue 17, item 3: the construct finding says what was measured


@pytest.mark.parametrize(
    "diff,same,words",
    [
        (0.0, True, "computes the same outputs"),
        (0.3, True, "computes different outputs (largest logit difference 3.0e-01, the same predictions"),
        (2.0, False, "and changes some predictions"),
    ],
)
def test_construct_finding_follows_the_measured_difference(tmp_path, diff, same, words):
    from test_experiment import fake_run

    from reslab.analysis.construct import section as construct_section

    fake_run(tmp_path, "plain", 8, 0, [0.1], 0.2)
    result = {
        "arch": "plain", "depth": 14, "source_label": "plain-8", "identity_blocks": 1, "max_abs_difference": diff,
        "same_predictions": same, "source_train_error": 0.1, "constructed_train_error": 0.1, "scratch_train_error": 0.3,
    }  # fmt: skip
    html = construct_section({"results": [result]}, tmp_path)
    assert words in html
    assert ("computes the same outputs" in html) == (diff == 0.0)


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


# ---------------------------------------------------------------------------------------------
# verdicts that follow from the measurements (issues 15.12 and 17.2)


def verdicts_of(tmp_path, nets, losses=None):
    from test_experiment import fake_run

    from reslab.summary import summarize
    from reslab.verdicts import degradation_verdicts

    for arch, depth, train_errors in nets:
        fake_run(tmp_path, arch, depth, 0, train_errors, 0.2, train_loss=(losses or {}).get((arch, depth), 1.0))
    return {v.claim.split(" (")[0]: v for v in degradation_verdicts(summarize(tmp_path), gather(tmp_path)[0])}


@pytest.mark.parametrize("deep_loss, holds", [(0.0195, True), (0.0205, False), (0.004, True)])
def test_both_residual_nets_at_zero_training_error_are_told_apart_by_their_loss(tmp_path, deep_loss, holds):
    nets = [("plain", 8, [0.5, 0.0]), ("plain", 14, [0.5, 0.3]), ("resnet", 8, [0.5, 0.0]), ("resnet", 14, [0.5, 0.0])]
    v = verdicts_of(tmp_path, nets, {("resnet", 8): 0.01, ("resnet", 14): deep_loss})
    floor = v["Deeper residual nets do not degrade"]
    assert floor.holds is holds  # within 0.01 nats of the shallower net's loss counts as no degradation
    assert "final training loss" in floor.text and f"ResNet-14 {deep_loss:.4f}, ResNet-8 0.0100" in floor.text


def test_removing_the_degradation_is_not_claimed_without_a_second_residual_depth(tmp_path):
    v = verdicts_of(tmp_path, [("plain", 8, [0.5, 0.1]), ("plain", 14, [0.5, 0.3]), ("resnet", 14, [0.5, 0.1])])
    assert "Deeper residual nets do not degrade" not in v
    assert "removes the degradation" not in v["Shortcuts help at depth 14"].text


# ---------------------------------------------------------------------------------------------
# 12. the report's figures and its account of imported networks


def test_error_curves_mark_the_lr_drops_and_show_training_error_on_a_log_axis(tmp_path):
    from test_experiment import fake_run

    from reslab import plots

    for arch in ("plain", "resnet"):
        fake_run(tmp_path, arch, 8, 0, [0.5, 0.01, 0.0], 0.2)
    svg = plots.error_curves(gather(tmp_path)[0], tmp_path / "curves")[1].read_text()
    assert "lr ÷ 10" in svg and "training error" in svg and "test error" in svg  # a legend, not a caption
    assert "log scale above 1%" in svg  # and linear below it, so that 0% is drawn at 0


def test_report_of_imported_networks_does_not_claim_a_recipe(tmp_path):
    from test_pretrained import RefResNet, save_like_original

    from reslab.pretrained import import_checkpoint
    from reslab.report import build_report

    save_like_original(RefResNet(1), tmp_path / "r8.th")
    import_checkpoint(tmp_path / "r8.th", tmp_path / "pretrained" / "resnet-8")
    html = build_report(tmp_path / "pretrained")
    assert "1 imported network, trained elsewhere" in html and "how is not recorded" in html
    assert "warmup_lr" not in html and "weight_decay" not in html  # reslab's defaults are not its recipe


# ---------------------------------------------------------------------------------------------
# 11. long analyses show how far they are (a progress bar with ETA that ends at its total)


def test_long_analyses_advance_a_progress_bar_to_its_total(monkeypatch, trained):
    from reslab.analysis import load

    bars = []

    class Bar:
        def __init__(self, total, desc):
            self.total, self.desc, self.n, self.closed = total, desc, 0, False
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def close(self):
            self.closed = True

    for name in ("lesion", "landscape", "gradients", "identity"):
        monkeypatch.setattr(load(name), "progress_bar", Bar)
    out = trained.parent / "analysis-out"
    load("lesion").analyze([trained], out, limit=50, samples=2)
    load("landscape").analyze([trained], out, resolution=3, images=50, log=quiet)
    load("gradients").analyze([trained], out, depths=[8], images=8, points=4)
    load("identity").analyze(out, max_k=2, steps=2, log=quiet)
    assert [b.desc.split()[0] for b in bars] == ["lesion", "landscape", "gradients", "identity"]
    assert all(b.closed and b.n == b.total > 0 for b in bars), [(b.desc, b.n, b.total) for b in bars]


def test_a_training_subset_is_scored_on_a_test_subset_in_proportion(tmp_path):
    from reslab.train import setup

    part, config = setup(TrainConfig(dataset="digits", device="cpu", subset=719), tmp_path / "a")
    assert len(part.data.test_y) == round(359 * 719 / 1438) == config.data.test_size
    assert sorted(torch.bincount(part.data.test_y).tolist())[0] >= 17  # class-balanced: 18 per class
    whole, _ = setup(TrainConfig(dataset="digits", device="cpu", subset=719, test_subset=0), tmp_path / "b")
    assert len(whole.data.test_y) == 359
    assert torch.equal(part.data.train_x, whole.data.train_x)  # the training images do not depend on it
    full, _ = setup(TrainConfig(dataset="digits", device="cpu"), tmp_path / "c")
    assert len(full.data.test_y) == 359


def seeded_verdicts(tmp_path, nets):
    """nets: (arch, depth, seed, train_errors); reach thresholds come from the curves."""
    from test_experiment import fake_run

    from reslab.summary import summarize
    from reslab.verdicts import degradation_verdicts

    for arch, depth, seed, train_errors in nets:
        fake_run(tmp_path, arch, depth, seed, train_errors, 0.2)
    return {v.claim.split(" (")[0]: v for v in degradation_verdicts(summarize(tmp_path), gather(tmp_path)[0])}


def test_a_resnet_that_never_reaches_the_threshold_is_a_no_not_left_out(tmp_path):
    nets = [("plain", 8, 0, [0.5, 0.01]), ("resnet", 8, 0, [0.5, 0.01])]  # the threshold: 1%
    nets += [("plain", 14, 0, [0.5, 0.01]), ("resnet", 14, 0, [0.5, 0.3])]
    faster = seeded_verdicts(tmp_path, nets)["Residual nets converge faster"]
    assert faster.holds is False and "ResNet-14 never does" in faster.text


def test_reaching_the_threshold_at_the_same_evaluation_is_unclear(tmp_path):
    v = seeded_verdicts(tmp_path, [("plain", 8, 0, [0.5, 0.01]), ("resnet", 8, 0, [0.5, 0.01])])
    assert v["Residual nets converge faster"].holds is None


def test_an_intermediate_depth_that_degrades_is_seen(tmp_path):
    v = seeded_verdicts(
        tmp_path, [("resnet", 8, 0, [0.5, 0.10]), ("resnet", 14, 0, [0.5, 0.30]), ("resnet", 20, 0, [0.5, 0.10])]
    )
    verdict = v["Deeper residual nets do not degrade"]
    assert verdict.holds is False and "ResNet-14 is worse than ResNet-8" in verdict.text
    assert "by depth 8: 10.0%, 14: 30.0%, 20: 10.0%" in verdict.text


def test_a_verdict_on_the_mean_that_most_seeds_do_not_share_is_unclear(tmp_path):
    nets = [("plain", 8, s, [0.5, 0.10]) for s in range(3)]
    nets += [("plain", 14, 0, [0.5, 0.60]), ("plain", 14, 1, [0.5, 0.10]), ("plain", 14, 2, [0.5, 0.10])]
    verdict = seeded_verdicts(tmp_path, nets)["Deeper plain nets degrade"]
    assert "1 of 3 seeds" in verdict.text and verdict.holds is None and "mean only" in verdict.text


# ---------------------------------------------------------------------------------------------
# issue 17, item 1: learning the identity, judged at equal convolutions and over depth


def identity_result(plain, residual):
    rows = lambda errors, per: [{"k": c // per, "convs": c, "error": e} for c, e in zip((2, 4, 6, 8), errors)]  # noqa: E731
    return {"steps": 10, "plain": rows(plain, 1), "residual": rows(residual, 2)}


@pytest.mark.parametrize(
    "plain,residual,holds",
    [
        ([0.01, 0.11, 0.39, 0.50], [0.002, 0.003, 0.011, 0.014], True),  # measured shape (lr 0.01, 400 steps)
        ([0.01, 0.02, 0.02, 0.03], [0.02, 0.03, 0.03, 0.04], False),
        ([0.01, 0.11, 0.05, 0.50], [0.002, 0.05, 0.011, 0.3], None),
    ],
)
def test_identity_finding_follows_the_trend(plain, residual, holds):
    from reslab.analysis.identity import finding

    f = finding(identity_result(plain, residual))
    assert f["holds"] is holds, f["text"]


def test_identity_compares_equal_convolutions_on_one_thread(tmp_path):
    from reslab.analysis import load

    threads = torch.get_num_threads()
    r = load("identity").analyze(tmp_path, max_k=2, steps=2, log=quiet)
    assert [(p["convs"], p["k"], q["k"]) for p, q in zip(r["plain"], r["residual"])] == [(2, 2, 1), (4, 4, 2)]
    assert torch.get_num_threads() == threads  # restored


def test_identity_default_learning_rate_is_the_documented_one():
    import inspect

    from reslab.analysis import identity

    assert inspect.signature(identity.identity_error).parameters["lr"].default == 0.01
    assert "lr 0.01" in identity.__doc__


# ---------------------------------------------------------------------------------------------
# issue 17, item 5: shattering measured on several lines, with its spread


def test_gradient_correlation_is_averaged_over_lines_with_its_spread(trained):
    from reslab.analysis import load

    r = load("gradients").analyze([trained], trained.parent / "grad-out", depths=[8], images=8, points=8, lines=3)
    for row in r["shattering"]["rows"]:
        assert len(row["values"]) == 3 and len(set(row["values"])) == 3  # three different lines
        assert row["correlation"] == pytest.approx(sum(row["values"]) / 3)
        assert row["correlation_std"] > 0
    assert len(r["runs"][0]["correlation_trained"]["values"]) == 3
