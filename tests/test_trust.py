"""Results a user can trust, files that are never lost, bad input that gets one sentence: each
case here was reproduced on an earlier version (issue 15) and failed there. The other cases of
that list live beside the module they test: test_train (divergence, the plan said first),
test_verdicts, test_report (escaping, figures), test_analysis and test_data (image folders)."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import EXP_QUICK, QUICK, cfg, copy_run, refused

from reslab import files, runs
from reslab.cli import main
from reslab.config import differences
from reslab.errors import UserError
from reslab.experiment import LocalBackend, grid, run_experiment
from reslab.runs import gather
from reslab.train import train

# ---------------------------------------------------------------------------------------------
# 1. re-running with changed settings never shows the old results


def test_experiment_rerun_with_other_settings_is_refused_then_overwritten(tmp_path):
    first = grid(cfg(), ["plain"], [8], [0])
    run_experiment(tmp_path, first, backend=LocalBackend(1))
    changed = grid(cfg(iterations=6), ["plain"], [8], [0])
    with pytest.raises(UserError, match="iterations 4 there, 6 asked"):
        run_experiment(tmp_path, changed, backend=LocalBackend(1))
    assert runs.read_metrics(tmp_path / "plain-8-seed0")[-1]["iteration"] == 4  # untouched
    out = run_experiment(tmp_path, changed, backend=LocalBackend(1), overwrite=True)
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
    run_experiment(tmp_path / "demo", grid(cfg(), ["plain"], [8], [0]), backend=LocalBackend(1))
    refused(capsys, ["train", "--depth", "8", *QUICK, "--out", tmp_path / "demo"], "experiment directory")


def test_report_leaves_out_runs_that_do_not_belong(tmp_path):
    exp = tmp_path / "exp"
    run_experiment(exp, grid(cfg(), ["plain", "resnet"], [8], [0]), backend=LocalBackend(1))
    train(cfg(arch="resnet", depth=14), exp / "stranger", progress=False)  # not a cell
    together, skipped = gather(exp)
    assert sorted(r.name for r in together) == ["plain-8-seed0", "resnet-8-seed0"]
    assert skipped == [("stranger", "not a cell of this experiment (see its experiment.json)")]

    folder = tmp_path / "runs"  # no experiment.json: the runs sharing the most common recipe
    for name, c in [("a", cfg()), ("b", cfg(arch="resnet")), ("c", cfg(dataset="synthetic"))]:
        train(c, folder / name, progress=False)
    together, skipped = gather(folder)
    assert [r.name for r in together] == ["a", "b"]
    assert skipped[0][0] == "c" and "dataset 'digits' in the others, 'synthetic' here" in skipped[0][1]
    from reslab.report import build_report

    html = build_report(folder)
    assert "Runs left out" in html and "synthetic" in html


def test_files_written_before_a_setting_existed_read_as_its_default(tmp_path):
    """A setting added to reslab later (here block_gamma) is missing from older files: those runs
    trained with its default, so they still belong together and an experiment still resumes."""
    exp = tmp_path / "exp"
    cells = grid(cfg(), ["plain", "resnet"], [8], [0])
    run_experiment(exp, cells, backend=LocalBackend(1))
    record = files.read_json(exp / "experiment.json")
    del record["recipe"]["block_gamma"]
    files.write_json(exp / "experiment.json", record)
    config = files.read_json(exp / "plain-8-seed0" / "config.json")
    del config["train"]["block_gamma"]
    files.write_json(exp / "plain-8-seed0" / "config.json", config)
    together, skipped = gather(exp)
    assert [r.name for r in together] == ["plain-8-seed0", "resnet-8-seed0"] and skipped == []
    assert differences({"lr": 0.1}, {"lr": 0.1, "block_gamma": 1.0}) == []
    assert differences({}, {"block_gamma": 0.3}) == ["block_gamma 1 there, 0.3 asked"]
    outcomes = run_experiment(exp, cells, backend=LocalBackend(1))  # nothing to retrain
    assert [(o.state, o.skipped) for o in outcomes] == [("finished", True)] * 2


def test_analysis_of_a_standalone_run_stays_in_that_run(tmp_path):
    from reslab.analysis import load

    train(cfg(), tmp_path / "mine", progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    load("responses").analyze([tmp_path / "mine"])
    assert (tmp_path / "mine" / "analyses" / "responses.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]


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
    train(cfg(), out, progress=False)
    (out / ".notes.tmp").write_text("mine")
    (out / f"{files.TMP_PREFIX}metrics.csv.abc.tmp").write_text("left by a killed writer")
    runs.write_status(out, "interrupted")
    train(cfg(), out, resume=True, progress=False)
    assert (out / ".notes.tmp").read_text() == "mine"
    assert not (out / f"{files.TMP_PREFIX}metrics.csv.abc.tmp").exists()


# ---------------------------------------------------------------------------------------------
# 7. locks and atomic figures


def test_import_is_refused_while_another_process_writes_the_directory(tmp_path):
    from test_pretrained import RefResNet, save_like_original

    from reslab.pretrained import import_checkpoint

    path = tmp_path / "resnet8.th"
    save_like_original(RefResNet(1), path)
    with runs.run_lock(tmp_path / "r"):  # as a training run holds it
        with pytest.raises(files.Locked):
            import_checkpoint(path, tmp_path / "r")
    assert not (tmp_path / "r" / "config.json").exists()


def test_experiment_leaves_a_cell_locked_by_another_process_alone(tmp_path):
    cells = grid(cfg(), ["plain"], [8], [0])
    cell = tmp_path / "plain-8-seed0"
    train(cells[0], cell, progress=False)
    runs.write_status(cell, "running", iteration=2, total=4, pid=1)
    before = (cell / "status.json").read_text()
    with runs.run_lock(cell):
        out = run_experiment(tmp_path, cells, backend=LocalBackend(1))
    assert out[0].state == "busy"
    assert (cell / "status.json").read_text() == before


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from reslab import plots

    fig = plt.figure()
    plots.save(fig, tmp_path / "f")
    before = (tmp_path / "f.png").read_bytes()

    def disk_full(path, data):
        raise files.WriteError("disk full")

    monkeypatch.setattr(files, "atomic_write_bytes", disk_full)
    with pytest.raises(files.WriteError):
        plots.save(plt.figure(figsize=(9, 2)), tmp_path / "f")
    assert (tmp_path / "f.png").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# 10. one sentence and exit 2, never a traceback


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
