"""Nothing read from disk is trusted: links, FIFOs and foreign files where reslab's own should be,
two processes racing, impossible numbers. Each case was reproduced on an earlier version."""

import json
import os
import subprocess
import sys

import pytest
from conftest import cfg, refused
from test_experiment import fake_run

from reslab import files, runs
from reslab.cli import main
from reslab.errors import UserError
from reslab.experiment import LocalBackend, grid, run_experiment
from reslab.train import train

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- not for any report"


def two_runs(root):
    fake_run(root, "plain", 8, 0, [0.5, 0.4], 0.5)
    fake_run(root, "resnet", 8, 0, [0.5, 0.3], 0.4)
    return root


def identity_result(root):
    result = {
        "steps": 1,
        "plain": [{"convs": 4, "k": 4, "error": 1.0}],
        "residual": [{"convs": 4, "k": 2, "error": 0.1}],
    }
    files.write_json(root / "analyses" / "identity.json", result)


# ---------------------------------------------------------------------------------------------
# links are never followed


@pytest.mark.parametrize("command", ["train", "experiment"])
def test_a_lock_that_is_a_link_is_never_followed(capsys, tmp_path, command):
    victim = tmp_path / "thesis.txt"
    victim.write_bytes(SECRET)
    out = tmp_path / "r"
    out.mkdir()
    (out / ".lock").symlink_to(victim)
    quick = ["--dataset", "digits", "--iterations", "3", "--batch-size", "32", "--out", out]
    argv = ["train", "--depth", "8", "--no-progress", *quick]
    if command == "experiment":
        argv = ["experiment", "degradation", "--depths", "8", *quick]
    refused(capsys, argv, str(out))
    assert victim.read_bytes() == SECRET
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_a_lock_link_in_reslabs_own_run_is_refused_too(tmp_path):
    victim = tmp_path / "thesis.txt"
    victim.write_bytes(SECRET)
    out = tmp_path / "r"
    train(cfg(), out, progress=False)
    os.unlink(out / ".lock")
    (out / ".lock").symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        train(cfg(iterations=6), out, resume=True, progress=False)
    assert victim.read_bytes() == SECRET


def test_figures_folder_that_is_a_link_is_refused(capsys, tmp_path):
    exp = two_runs(tmp_path / "exp")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "error_curves.png").write_bytes(SECRET)
    (exp / "figures").symlink_to(victim)
    refused(capsys, ["report", exp], "figures", "symbolic link")
    assert sorted(p.name for p in victim.iterdir()) == ["error_curves.png"]
    assert (victim / "error_curves.png").read_bytes() == SECRET


IDENTITY = {"steps": 1, "plain": [{"convs": 2, "k": 2, "error": 1.0}], "residual": [{"convs": 2, "k": 1, "error": 0.1}]}


def test_analyses_folder_that_is_a_link_is_refused(tmp_path):
    from reslab.analysis.common import write_result

    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "analyses").symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        write_result(tmp_path / "exp", "identity", IDENTITY)
    assert list(victim.iterdir()) == []


def make_fifo(path):
    os.mkfifo(path)


def make_dir(path):
    path.mkdir()


def make_link(path):
    path.symlink_to(path.parent.parent / "id_rsa")


def make_not_png(path):
    path.write_bytes(b"#!/bin/sh\n" + SECRET)


@pytest.mark.parametrize("make", [make_link, make_fifo, make_dir, make_not_png], ids=["link", "fifo", "dir", "not-png"])
def test_a_figure_that_is_not_reslabs_png_costs_only_its_section(tmp_path, make):
    """Run as a user would, in a subprocess: a FIFO must not hang the report."""
    (tmp_path / "id_rsa").write_bytes(SECRET)
    exp = two_runs(tmp_path / "exp")
    identity_result(exp)
    (exp / "figures").mkdir()
    make(exp / "figures" / "identity.png")
    done = subprocess.run(
        [sys.executable, "-m", "reslab", "report", str(exp)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    html = (exp / "report.html").read_text()
    assert "The figure figures/identity.png is not shown" in html
    assert "Learning the identity" in html and html.count("data:image/png") == 1  # the error curves alone
    import base64

    assert base64.b64encode(SECRET)[:40].decode() not in html and "OPENSSH" not in html


def test_runs_that_are_links_are_not_followed(tmp_path):
    exp = two_runs(tmp_path / "exp")
    elsewhere = fake_run(tmp_path / "elsewhere", "plain", 14, 0, [0.5, 0.2], 0.3)
    (exp / "plain-14-seed0").symlink_to(elsewhere)
    assert [r.name for r in runs.gather(exp)[0]] == ["plain-8-seed0", "resnet-8-seed0"]
    real = tmp_path / "real"
    run_experiment(real, grid(cfg(), ["plain"], [8], [0]), backend=LocalBackend(1))
    (real / "plain-14-seed0").symlink_to(elsewhere)
    with pytest.raises(UserError, match="symbolic link"):
        run_experiment(real, grid(cfg(), ["plain"], [8, 14], [0]), backend=LocalBackend(1), overwrite=True)
    assert runs.read_status(elsewhere)["state"] == "finished"


# ---------------------------------------------------------------------------------------------
# ownership is proven by content


def test_a_folder_with_someone_elses_experiment_json_is_not_reslabs(capsys, tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    mine = {"experiment.json": '{"name": "my wandb sweep"}', "report.html": "<p>mine</p>", "summary.csv": "a,b\n",
            "notes.txt": "notes"}  # fmt: skip
    for name, text in mine.items():
        (proj / name).write_text(text)
    argv = ["experiment", "degradation", "--dataset", "digits", "--depths", "8", "--iterations", "3", "--out", proj]
    refused(capsys, argv, "not a reslab")
    assert {p.name: p.read_text() for p in proj.iterdir()} == mine
    assert runs.owner(proj) is None


def test_an_experiment_json_of_reslabs_is_recognised(tmp_path):
    cells = grid(cfg(), ["plain"], [8], [0])
    run_experiment(tmp_path / "exp", cells, backend=LocalBackend(1))
    assert runs.owner(tmp_path / "exp") == "experiment"
    record = json.loads((tmp_path / "exp" / "experiment.json").read_text())
    record["recipe"]["lr"] = "fast"
    (tmp_path / "exp" / "experiment.json").write_text(json.dumps(record))
    assert runs.owner(tmp_path / "exp") is None


def test_deeply_nested_folders_under_out_are_inspected_without_recursion(capsys, tmp_path):
    out = tmp_path / "out"
    deep = out
    for _ in range(600):
        deep = deep / "d"
    os.makedirs(deep)
    refused(capsys, ["train", "--depth", "8", "--dataset", "digits", "--iterations", "3", "--out", out], "not empty")


def test_a_folder_of_too_many_entries_is_not_inspected_to_the_end(tmp_path, monkeypatch):
    from reslab import files

    monkeypatch.setattr(files, "MAX_ENTRIES", 5)
    monkeypatch.setattr(files.entries, "__defaults__", (5,))
    for i in range(8):
        (tmp_path / f".reslab-tmp-{i}").write_text("")
    assert runs.owner(tmp_path) is None


# ---------------------------------------------------------------------------------------------
# two processes racing


def test_a_refused_overwrite_deletes_nothing(tmp_path):
    exp = tmp_path / "exp"
    first = grid(cfg(), ["plain"], [8], [0])
    run_experiment(exp, first, backend=LocalBackend(1))
    other = grid(cfg(lr=0.05), ["plain"], [8], [0])
    with files.locked(exp, "held by the test"):  # experiment A is still running
        with pytest.raises(files.Locked):
            run_experiment(exp, other, backend=LocalBackend(1), overwrite=True)
    assert runs.read_status(exp / "plain-8-seed0")["state"] == "finished"
    assert runs.read_config(exp / "plain-8-seed0").train.lr == 0.1


# ---------------------------------------------------------------------------------------------
# a sentence, not a traceback


@pytest.mark.parametrize("command", ["experiment", "demo"])
def test_a_subset_larger_than_the_dataset_is_one_sentence(capsys, tmp_path, command):
    out = tmp_path / "exp"
    argv = [command, *(["degradation"] if command == "experiment" else []), "--dataset", "digits", "--subset", "5000",
            "--depths", "8", "--out", out]  # fmt: skip
    refused(capsys, argv, "--subset 5000", "1438")
    assert not out.exists()


def test_a_huge_image_is_refused_by_its_size_before_it_is_read(tmp_path, monkeypatch):
    from PIL import Image
    from test_data import image_folder

    from reslab import data
    from reslab.data import folder

    image_folder(tmp_path / "f", lambda path, _: Image.new("L", (8, 8), 10).save(path))
    big = tmp_path / "f" / "train" / "a" / "0.png"
    with open(big, "wb") as f:  # sparse: 3 GB on paper, nothing on the disk
        f.truncate(3 * 2**30)
    read = []
    monkeypatch.setattr(folder, "file_digest", lambda p, *a: read.append(p) or b"")
    with pytest.raises(UserError, match="bytes, more than any image"):
        data.load_dataset(f"imagefolder:{tmp_path / 'f'}")
    assert read == []


# ---------------------------------------------------------------------------------------------
# impossible numbers


@pytest.mark.parametrize("bad", ["nan", "-3", "1.5", "inf"])
def test_impossible_errors_leave_the_run_out_with_the_reason(tmp_path, bad):
    from reslab.report import build_report

    exp = two_runs(tmp_path / "exp")
    fake_run(exp, "plain", 14, 0, [0.5, 0.45], 0.5)
    path = exp / "plain-14-seed0" / "metrics.csv"
    lines = path.read_text().splitlines()
    head = lines[0].split(",")
    row = lines[-1].split(",")
    row[head.index("train_error")] = bad
    path.write_text("\n".join([*lines[:-1], ",".join(row)]) + "\n")
    together, skipped = runs.gather(exp)
    assert [r.name for r in together] == ["plain-8-seed0", "resnet-8-seed0"]
    assert skipped[0][0] == "plain-14-seed0" and "train_error" in skipped[0][1]
    html = build_report(exp)
    assert "plain-14 ends at" not in html and "-300.0%" not in html and "nan%" not in html


def test_a_negative_eval_every_in_a_config_file_is_refused(capsys, tmp_path):
    run = tmp_path / "r"
    train(cfg(), run, progress=False)
    config = json.loads((run / "config.json").read_text())
    config["train"]["eval_every"] = -3
    (tmp_path / "c.json").write_text(json.dumps(config))
    refused(capsys, ["train", "--config", tmp_path / "c.json", "--out", tmp_path / "r2"], "--eval-every")
    assert not (tmp_path / "r2").exists()
    (run / "config.json").write_text(json.dumps(config))
    refused(capsys, ["report", run], "eval-every")


# ---------------------------------------------------------------------------------------------
# no flag dropped without a word


def test_flags_beside_config_override_the_file(capsys, tmp_path):
    run = tmp_path / "r"
    train(cfg(), run, progress=False)
    out = tmp_path / "r2"
    argv = ["train", "--config", run / "config.json", "--seed", "1", "--epochs", "0.1", "--no-progress", "--out", out]
    assert main([str(a) for a in argv]) == 0
    assert "except: epochs None there, 0.1 asked; iterations 4 there, None asked; seed 0 there, 1 asked" in (
        capsys.readouterr().out
    )
    got = runs.read_config(out).train
    assert (got.seed, got.epochs, got.iterations, got.arch, got.batch_size) == (1, 0.1, None, "plain", 32)


def test_the_demos_analyses_use_only_this_experiments_runs(tmp_path, monkeypatch):
    from reslab import demo
    from reslab.analysis import responses

    out = tmp_path / "exp"
    run_experiment(out, grid(cfg(), ["plain"], [8, 14], [0]), backend=LocalBackend(1), spec={"kind": "demo"})
    run_experiment(out, grid(cfg(), ["plain"], [8], [0]), backend=LocalBackend(1), spec={"kind": "demo"})
    seen = []
    monkeypatch.setattr(responses, "analyze", lambda dirs, out: seen.extend(d.name for d in dirs) or {"findings": []})
    demo.demo_analyses(out, ["plain"], [8])
    assert seen == ["plain-8-seed0"]


def test_a_temporary_name_that_is_a_link_is_removed_not_followed(tmp_path):
    run = tmp_path / "r"
    train(cfg(), run, progress=False)
    target = tmp_path / "keep.tmp"
    target.write_bytes(SECRET)
    (run / f"{files.TMP_PREFIX}x.tmp").symlink_to(target)
    with runs.run_lock(run):
        pass
    assert target.read_bytes() == SECRET and not os.path.lexists(run / f"{files.TMP_PREFIX}x.tmp")
