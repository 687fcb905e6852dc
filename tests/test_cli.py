import subprocess
import sys
import time
from pathlib import Path

import pytest

from reslab import runs

QUICK_GRID = ["--dataset", "digits", "--iterations", "4", "--batch-size", "32"]
QUICK = [*QUICK_GRID, "--no-progress"]


def assert_user_error(result, *phrases):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for p in phrases:
        assert p in result.stderr, result.stderr


def test_help_is_fast_and_does_not_import_torch():
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", "import sys, reslab.cli; reslab.cli.build_parser(); print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "False"
    assert time.perf_counter() - t0 < 5


def test_models_table(cli):
    r = cli("models")
    assert r.returncode == 0
    assert "269,722" in r.stdout and "853,018" in r.stdout and "125.49" in r.stdout


def test_train_then_eval(cli, tmp_path):
    r = cli("train", "--arch", "plain", "--depth", "8", *QUICK, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert "test error" in r.stdout
    r = cli("eval", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    err = runs.read_metrics(tmp_path / "run")[-1]["test_error"]
    # eval runs in fp32 while training evaluated in the default precision: allow a few images
    shown = float(r.stdout.split("error ")[1].split("%")[0]) / 100
    assert abs(shown - err) < 0.02


def test_datasets_lists_sources(cli, tmp_path):
    r = cli("datasets", "--data-dir", tmp_path)
    assert r.returncode == 0 and "digits" in r.stdout and "not downloaded" in r.stdout


@pytest.mark.parametrize(
    "args,phrases",
    [
        (["train", "--depth", "18", *QUICK], ["6n+2", "14 and 20"]),
        (["train", "--arch", "vgg", "--depth", "8", *QUICK], ["unknown architecture 'vgg'"]),
        (["train", "--depth", "8", "--dataset", "imagenet", "--iterations", "2"], ["unknown dataset 'imagenet'"]),
    ],
)
def test_bad_input_gets_a_sentence_and_status_2(cli, tmp_path, args, phrases):
    assert_user_error(cli(*args, "--out", tmp_path / "r"), *phrases)
    assert not (tmp_path / "r").exists()


def test_missing_data_file(cli, tmp_path):
    r = cli(
        "train",
        "--depth",
        "8",
        "--dataset",
        "cifar10",
        "--data-dir",
        tmp_path,
        "--no-download",
        "--out",
        tmp_path / "r",
    )
    assert_user_error(r, "cifar-10-batches-py")


def test_truncated_checkpoint(cli, tmp_path):
    out = tmp_path / "r"
    assert cli("train", "--depth", "8", *QUICK, "--out", out).returncode == 0
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    runs.write_status(out, "interrupted")
    assert_user_error(cli("train", "--depth", "8", *QUICK, "--out", out, "--resume"), "checkpoint.pt", "delete it")


def test_output_directory_with_a_different_run(cli, tmp_path):
    out = tmp_path / "r"
    assert cli("train", "--depth", "8", *QUICK, "--out", out).returncode == 0
    before = (out / "config.json").read_text()
    assert_user_error(cli("train", "--depth", "14", *QUICK, "--out", out), "other settings")
    assert (out / "config.json").read_text() == before  # nothing was overwritten


def test_report_of_a_missing_directory(cli, tmp_path):
    assert_user_error(cli("report", tmp_path / "nope"), "not a directory")
    assert_user_error(cli("report", tmp_path), "holds no run directories")


def test_demo_writes_an_experiment_directory_with_report(cli, tmp_path):
    out = tmp_path / "demo"
    r = cli("demo", "--depths", "8,14", "--epochs", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "Deeper plain nets" in r.stdout and "Identity shortcuts are free" in r.stdout
    assert "constructed plain-14 from plain-8: computes the same outputs (largest logit difference 0.0e+00)" in r.stdout
    assert "in eval mode on the training images" in r.stdout  # not the table's running train-mode error
    names = sorted(p.name for p in out.iterdir())
    assert {
        "plain-8-seed0",
        "plain-14-seed0",
        "resnet-8-seed0",
        "resnet-14-seed0",
        "summary.csv",
        "report.html",
        "experiment.json",
        "analyses",
        "figures",
    } <= set(names)
    html = (out / "report.html").read_text()
    for section in ("What the measurements say", "Layer responses", "The constructed solution", "What the shortcuts"):
        assert section in html
    again = cli("demo", "--depths", "8,14", "--epochs", "2", "--out", out)  # finished runs are reused
    assert again.returncode == 0 and "4 of 4 runs already finished" in again.stdout


def test_experiment_seed_starts_the_seeds_there(cli, tmp_path):
    """--seed N: the held-out seeds N, N+1, ... without renaming any folder."""
    out = tmp_path / "exp"
    r = cli("experiment", "--archs", "plain", "--depths", "8", "--seeds", "2", "--seed", "3", *QUICK_GRID, "--out", out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("plain-8-seed*")) == ["plain-8-seed3", "plain-8-seed4"]
    assert runs.read_config(out / "plain-8-seed4").train.seed == 4


@pytest.mark.slow
def test_demo_shows_degradation_on_every_seed(cli, tmp_path):
    r = cli("demo", "--seeds", "3", "--out", tmp_path / "demo", timeout=900)
    assert r.returncode == 0, r.stderr
    assert "degradation observed on 3 of 3 seeds" in r.stdout
    # Every verdict is settled: yes, NO, or not testable at this budget (with where it can be); never 'unclear'.
    assert "[yes] Deeper residual nets do not degrade" in r.stdout
    assert "[unclear]" not in r.stdout and r.stdout.count("[not testable here]") <= 2


def test_analyze_commands_on_trained_runs(cli, tmp_path):
    out = tmp_path / "exp"
    assert (
        cli(
            "experiment", "degradation", "--dataset", "digits", "--depths", "8,14", "--iterations", "6", "--out", out
        ).returncode
        == 0
    )
    runs_ = [out / "plain-8-seed0", out / "resnet-8-seed0"]
    r = cli("analyze", "lesion", *runs_, "--samples", "2")
    assert r.returncode == 0, r.stderr
    assert (out / "analyses" / "lesion.json").exists() and (out / "figures" / "lesion.png").exists()
    r = cli("analyze", "gradients", *runs_, "--depths", "8,14", "--points", "8", "--images", "16")
    assert r.returncode == 0, r.stderr
    r = cli("analyze", "landscape", out / "resnet-8-seed0", "--resolution", "3", "--images", "64")
    assert r.returncode == 0, r.stderr and "local minima" in r.stdout
    r = cli("analyze", "identity", "--max-layers", "2", "--steps", "5", "--out", out)
    assert r.returncode == 0, r.stderr
    assert cli("report", out).returncode == 0
    html = (out / "report.html").read_text()
    for section in ("Lesion study", "Gradient flow", "Loss landscape", "Learning the identity"):
        assert section in html


def test_analyze_errors(cli, tmp_path):
    assert_user_error(cli("analyze", "responses", tmp_path), "not a run directory")
    out = tmp_path / "r"
    assert cli("train", "--depth", "14", *QUICK, "--out", out).returncode == 0
    assert_user_error(cli("analyze", "construct", "--from", out, "--depth", "8"), "shallower")


def test_a_crafted_config_cannot_write_elsewhere(cli, tmp_path):
    import json

    out = tmp_path / "exp" / "r"
    assert cli("train", "--depth", "8", *QUICK, "--out", out).returncode == 0
    config = json.loads((out / "config.json").read_text())
    config["model"]["depth"] = "../../../escaped"
    (out / "config.json").write_text(json.dumps(config))
    assert_user_error(
        cli("analyze", "construct", "--from", out, "--depth", "14"), "model.depth: expected `int`, got `str`"
    )
    config["model"]["depth"], config["model"]["arch"] = 8, "../../escaped"
    (out / "config.json").write_text(json.dumps(config))
    assert_user_error(
        cli("analyze", "construct", "--from", out, "--depth", "14"), "is not a network reslab builds"
    )  # refused on reading
    assert not list(tmp_path.rglob("*escaped*"))


EXPERIMENT = [
    "experiment",
    "degradation",
    "--dataset",
    "digits",
    "--depths",
    "8,14",
    "--seeds",
    "2",
    "--iterations",
    "150",
    "--eval-every",
    "10",
    "--jobs",
    "2",
]


def test_killed_experiment_rerun_finishes_only_the_missing_work(tmp_path):
    import signal

    out = tmp_path / "exp"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reslab", *EXPERIMENT, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.time()
    while time.time() - t0 < 180 and proc.poll() is None:  # wait until some, not all, cells have finished
        states = [runs.read_status(d)["state"] for d in runs.find_runs(out)] if out.exists() else []
        if 1 <= states.count("finished") < 8:
            break
        time.sleep(0.05)
    second = subprocess.run(
        [sys.executable, "-m", "reslab", *EXPERIMENT, "--out", str(out)], capture_output=True, text=True
    )  # a second process on the same directory is refused, not interleaved
    assert second.returncode == 2 and "another reslab process" in second.stderr
    proc.send_signal(signal.SIGKILL)  # the driver; its workers checkpoint and exit with it
    proc.communicate(timeout=60)  # returns only once the workers, which share its output, are gone
    done = {
        d.name: (d / "metrics.csv").stat().st_mtime_ns
        for d in runs.find_runs(out)
        if runs.read_status(d)["state"] == "finished"
    }
    assert done and len(done) < 8
    rerun = subprocess.run(
        [sys.executable, "-m", "reslab", *EXPERIMENT, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done)} of 8 runs already finished" in rerun.stdout
    for name, stamp in done.items():
        assert (out / name / "metrics.csv").stat().st_mtime_ns == stamp  # finished work untouched
    assert all(runs.read_status(d)["state"] == "finished" for d in runs.find_runs(out))


def test_a_run_can_be_rebuilt_from_its_config_alone(cli, tmp_path):
    assert (
        cli("train", "--arch", "plain", "--depth", "8", *QUICK, "--seed", "3", "--out", tmp_path / "a").returncode == 0
    )
    r = cli("train", "--config", tmp_path / "a" / "config.json", "--out", tmp_path / "b", "--no-progress")
    assert r.returncode == 0, r.stderr
    a, b = runs.read_metrics(tmp_path / "a"), runs.read_metrics(tmp_path / "b")
    drop = lambda rows: [{k: v for k, v in x.items() if k not in runs.TIMING_FIELDS} for x in rows]  # noqa: E731
    assert drop(a) == drop(b) and len(a) > 0
    (tmp_path / "bad.json").write_text('{"train": {"depth": 8, "colour": "red"}}')
    assert_user_error(cli("train", "--config", tmp_path / "bad.json", "--out", tmp_path / "c"), "colour")


def test_demo_with_an_unknown_dataset_writes_nothing(cli, tmp_path):
    assert_user_error(cli("demo", "--dataset", "foo", "--out", tmp_path / "d"), "unknown dataset 'foo'")
    assert not (tmp_path / "d").exists()


def test_demo_refuses_zero_epochs_instead_of_taking_the_default(cli, tmp_path):
    assert_user_error(cli("demo", "--epochs", "0", "--out", tmp_path / "d"), "--epochs: must be a positive")
    assert not (tmp_path / "d").exists()


def test_every_schedule_setting_has_a_flag(tmp_path):
    from reslab.cli import main
    from reslab.runs import read_config

    out = tmp_path / "r"
    schedule = ["--milestones", "0.25,0.5", "--warmup-lr", "0.02", "--warmup-error", "0.5", "--warmup", "on"]
    argv = ["train", "--depth", "8", *QUICK, *schedule, "--out", out]
    assert main([str(a) for a in argv]) == 0
    cfg = read_config(out)
    assert (cfg.train.milestones, cfg.train.warmup_lr, cfg.train.warmup_error) == ([0.25, 0.5], 0.02, 0.5)
    assert cfg.resolved.milestones == [1, 2]


def all_parsers():
    """Every command's and every analysis's parser, with its name."""
    import argparse

    from reslab.cli import build_parser

    todo, found = [("reslab", build_parser(["analyze"]))], []  # "analyze": with every analysis's options
    while todo:
        name, parser = todo.pop()
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return found


def test_every_option_says_what_it_does_and_its_default():
    import argparse

    missing = []
    for name, parser in all_parsers():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            label = f"{name} {action.option_strings[0] if action.option_strings else action.dest}"
            text = action.help or ""
            if not text or text == argparse.SUPPRESS:
                missing.append(f"{label}: no help")
            elif action.default not in (None, False, True, argparse.SUPPRESS) and "default" not in text:
                missing.append(f"{label}: default {action.default!r} not shown")
    assert not missing, "\n".join(missing)


def test_experiment_without_a_name_runs_the_degradation_experiment(tmp_path):
    from reslab.cli import main

    out = tmp_path / "e"
    assert main(["experiment", "--depths", "8", "--archs", "resnet", *QUICK[:-1], "--out", str(out)]) == 0
    assert runs.read_experiment(out)["kind"] == "degradation"


def test_a_run_records_how_to_reproduce_it(cli, tmp_path):
    out = tmp_path / "r"
    assert cli("train", "--depth", "8", *QUICK, "--seed", "3", "--out", out).returncode == 0
    env = runs.read_config(out).environment
    assert env["command"] == f"reslab train --depth 8 {' '.join(QUICK)} --seed 3 --out {out}"
    assert env["cpu"] and env["cpu"] not in ("x86_64", "")
    head = subprocess.run(
        ["git", "-C", str(Path(runs.__file__).parent), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode == 0:  # run from a git checkout
        assert env["git_commit"].rstrip("+") == head.stdout.strip()


def test_the_report_shows_how_to_reproduce_it_and_each_setting_once(cli, tmp_path):
    out = tmp_path / "e"
    argv = ["experiment", "--depths", "8", "--archs", "resnet", *QUICK[:-1], "--out", out]
    assert cli(*argv).returncode == 0
    html = (out / "report.html").read_text()
    assert f"reslab {' '.join(map(str, argv))}" in html.split("<h2>Reproduce</h2>")[1]
    config = html.split("<h2>Configuration</h2>")[1].split("<h2>Environment</h2>")[0]
    assert config.count(">augmentation<") == 1 and ">off (auto)<" in config  # digits: never mirrored
    assert config.count(">device<") == 1 and "<div>cpu<" in config and "<div>auto<" not in config


def test_tensorboard_on_a_grid_writes_one_log_per_cell(cli, tmp_path):
    out = tmp_path / "e"
    done = cli("experiment", "--depths", "8", *QUICK[:-1], "--tensorboard", "--out", out)
    assert done.returncode == 0, done.stderr
    for cell in ("plain-8-seed0", "resnet-8-seed0"):
        assert list((out / cell / "tensorboard").glob("events.out.tfevents.*")), cell


def test_tensorboard_without_its_package_is_refused_before_anything_trains(tmp_path):
    argv = ["demo", "--depths", "8", "--epochs", "0.1", "--tensorboard", "--out", str(tmp_path / "d")]
    hide = "import sys; sys.modules['torch.utils.tensorboard'] = None"  # as if tensorboard were not installed
    script = f"{hide}; from reslab.cli import main; sys.exit(main({argv!r}))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "pip install 'reslab[tensorboard]'" in done.stderr, done.stderr
    assert not (tmp_path / "d").exists()


def test_the_cli_imports_where_fcntl_does_not_exist():
    """Windows has no fcntl: every command's module must still import (locks use msvcrt there)."""
    script = (
        "import sys; sys.modules['fcntl'] = None\n"
        "import reslab.cli, reslab.runs, reslab.experiment, reslab.train, reslab.report\n"
        "from reslab.cli import main\n"
        "sys.exit(main(['models', '--depths', '20']))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "269,722" in done.stdout, done.stderr
