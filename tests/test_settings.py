"""Every setting declared once and layered once: options generated from the fields, presets,
--config files and resumed runs as the parser's defaults, typed options (in any spelling argparse
takes) on top; a run directory is enough to resume it; eval agrees with the run."""

import argparse
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import refused

from reslab import checkpoints, cli, runs, settings
from reslab.options import float_list, int_list
from reslab.presets import PRESETS

GRID_COMMANDS = ("train", "demo", "experiment")


def parse(*argv):
    parser = cli.build_parser(list(argv))
    return settings.parse(parser, parser.commands[argv[0]], [str(a) for a in argv])


def printed(capsys, *argv) -> dict:
    assert cli.main([str(a) for a in [*argv, "--print-config"]]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_a_typed_option_wins_over_the_preset_in_any_spelling(capsys):
    for spelling in ("--iterations", "--iter", "--it"):
        shown = printed(capsys, "experiment", "degradation", "--preset", "cpu", spelling, "4000")
        assert shown["iterations"] == 4000 and shown["image_size"] == PRESETS["cpu"].train["image_size"]
    # Another unit of length replaces the preset's.
    shown = printed(capsys, "experiment", "--preset", "cpu", "--ep", "3")
    assert (shown["epochs"], shown["iterations"]) == (3.0, None)


def a_value(action: argparse.Action):
    """A value for an option that differs from its default, as typed and as parsed."""
    if action.nargs == 0:
        return [], not action.default
    if action.choices:
        choice = next(c for c in action.choices if c != action.default)
        return [str(choice)], choice
    if action.type in (float_list, int_list):
        return ["0.25,0.5" if action.type is float_list else "8,14"], None
    if isinstance(action.default, float) or action.dest in ("epochs", "scale"):
        return ["0.5"], 0.5
    if action.type is not None and action.dest not in ("dataset", "device"):
        return ["9"], 9
    return ["value"], "value"


def shortest_prefix(option: str, options: list[str]) -> str:
    """The shortest abbreviation argparse takes for `option` (an exact name wins over longer ones)."""
    for n in range(3, len(option)):
        if [o for o in options if o.startswith(option[:n])] == [option]:
            return option[:n]
    return option


@pytest.mark.parametrize("command", GRID_COMMANDS)
def test_every_option_and_its_shortest_prefix_set_the_same_value(command):
    parser = cli.build_parser([command])
    sub = parser.commands[command]
    longs = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    checked = 0
    for action in sub._actions:
        long = next((o for o in action.option_strings if o.startswith("--")), None)
        if long is None or action.dest in ("help", "config", "print_config", "resume", "quiet", "verbose"):
            continue
        typed, expected = a_value(action)
        base = [command, "--out", "o"] if command == "train" else [command]
        full = getattr(parse(*base, long, *typed), action.dest)
        short = getattr(parse(*base, shortest_prefix(long, longs), *typed), action.dest)
        assert full == short, long
        assert full != action.default or action.dest == "out", long
        if expected is not None:
            assert full == expected, long
        checked += 1
    assert checked > {"train": 35, "demo": 10, "experiment": 40}[command]


def test_print_config_is_yaml_that_config_takes_back(tmp_path, capsys):
    first = printed(capsys, "experiment", "--preset", "cpu", "--seeds", "3", "--lr", "0.05")
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(first))
    assert printed(capsys, "experiment", "--config", path) == first
    # What is typed beside the file wins over it.
    assert printed(capsys, "experiment", "--config", path, "--lr", "0.2")["lr"] == 0.2


def test_bad_config_files_are_one_sentence(tmp_path, capsys):
    cases = {
        "colour: red": "does not take: colour",
        "lr: -1": "lr must be a positive",
        "depths: 20": "depths must be a list of whole numbers",
        "[1, 2": "is not valid YAML",
        "- 1\n- 2": "must hold a mapping",
        "epochs: .inf": "epochs must be a positive finite number",
    }
    for i, (text, phrase) in enumerate(cases.items()):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(text)
        refused(capsys, ["experiment", "--config", path, "--out", tmp_path / "x"], phrase)
    assert not (tmp_path / "x").exists()


QUICK = ["--arch", "plain", "--depth", "8", "--dataset", "digits", "--iterations", "24", "--eval-every", "8",
         "--no-progress"]  # fmt: skip


def test_config_json_of_a_run_with_a_typed_length(trained, tmp_path, capsys):
    """`train --config RUN/config.json --iter 100` trains 100 iterations, not the file's."""
    shown = printed(capsys, "train", "--config", trained / "config.json", "--iter", "100", "--out", tmp_path / "r")
    assert shown["iterations"] == 100 and shown["arch"] == "plain" and shown["dataset"] == "digits"


def interrupt_after_first_evaluation(monkeypatch):
    from reslab import progress

    real = progress.Progress.period
    calls = {"n": 0}

    def period(self, row):
        real(self, row)
        calls["n"] += 1
        if calls["n"] == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(progress.Progress, "period", period)
    return lambda: monkeypatch.setattr(progress.Progress, "period", real)


def test_resume_needs_only_the_run_directory(tmp_path, monkeypatch, capsys):
    whole, half = tmp_path / "whole", tmp_path / "half"
    assert cli.main([*map(str, ["train", *QUICK, "--out", whole])]) == 0
    restore = interrupt_after_first_evaluation(monkeypatch)
    assert cli.main([*map(str, ["train", *QUICK, "--out", half])]) == 130
    restore()
    assert runs.read_status(half)["state"] == "interrupted"
    # A flag that changes the recipe is refused with the differences; nothing is touched.
    before = (half / "checkpoint.pt").read_bytes()
    refused(
        capsys, ["train", "--resume", "--out", half, "--lr", "0.2", "--depth", "14"], "lr 0.1 in the run, 0.2 asked"
    )
    assert (half / "checkpoint.pt").read_bytes() == before
    # The directory alone (no --dataset, no --arch) continues it bit for bit; the device may change.
    assert cli.main(["train", "--resume", str(half), "--device", "cpu", "--no-progress"]) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k not in runs.TIMING_FIELDS} for r in rows]  # noqa: E731
    assert strip(runs.read_metrics(half)) == strip(runs.read_metrics(whole))
    a, b = checkpoints.load_weights(half / "model.safetensors"), checkpoints.load_weights(whole / "model.safetensors")
    assert all(bool((a[k] == b[k]).all()) for k in a)


def test_an_experiment_resumes_from_its_directory(tmp_path, capsys):
    out = tmp_path / "e"
    grid = ["--archs", "plain", "--depths", "8", "--dataset", "digits", "--iterations", "4", "--jobs", "1"]
    assert cli.main(["experiment", *grid, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    shown = printed(capsys, "experiment", "--resume", "--out", out)
    assert (shown["archs"], shown["depths"], shown["iterations"], shown["dataset"]) == ("plain", [8], 4, "digits")
    assert cli.main(["experiment", "--resume", "--out", str(out)]) == 0
    assert "1 of 1 runs already finished" in capsys.readouterr().out
    refused(capsys, ["experiment", "--resume", "--out", out, "--lr", "0.3"], "lr 0.1 in the run, 0.3 asked")


def test_eval_prints_the_runs_own_last_test_error(tmp_path, capsys):
    """Training evaluates in the run's precision (here bf16 autocast); eval does too by default."""
    from reslab.evaluate import evaluate_run

    out = tmp_path / "r"
    assert cli.main(["train", *QUICK, "--precision", "bf16", "--out", str(out)]) == 0
    last = runs.read_metrics(out)[-1]
    as_run = evaluate_run(out, device="cpu")
    assert as_run["precision"] == "bf16" and as_run["as_run"]
    assert round(as_run["error"], 6) == last["test_error"] and round(as_run["loss"], 6) == last["test_loss"]
    assert cli.main(["eval", str(out)]) == 0
    assert f"error {last['test_error']:.2%}" in capsys.readouterr().out
    fp32 = evaluate_run(out, device="cpu", precision="fp32")
    assert fp32["precision"] == "fp32" and not fp32["as_run"]


def test_no_print_and_no_log_parameter_in_the_library():
    src = Path(__file__).parents[1] / "src" / "reslab"
    found = []
    for path in src.rglob("*.py"):
        if path.name in ("cli.py", "commands.py"):  # the command line's edge prints
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"(?<![\w.])print\(|\blog=", code):
                found.append(f"{path.relative_to(src)}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_quiet_demo_prints_only_the_reports_path(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "reslab", "demo", "--depths", "8,14", "--epochs", "1", "--jobs", "1", "--quiet",
         "--out", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"report: {tmp_path / 'd' / 'report.html'}"]


def test_mypy_sees_the_real_types_of_the_public_api(tmp_path):
    pytest.importorskip("mypy")
    script = tmp_path / "use.py"
    script.write_text(
        "import reslab\n"
        "ok = reslab.TrainConfig(depth=20)\n"
        "bad = reslab.TrainConfig(depth='20')\n"
        "model = reslab.load_model('runs/x')\n"
        "model.eval()\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(script)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = [line for line in r.stdout.splitlines() if "error:" in line]
    assert len(lines) == 1 and "use.py:3" in lines[0] and "depth" in lines[0], r.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--epochs", "inf"],
        ["demo", "--epochs", "nan"],
        ["demo", "--epochs", "1e300"],
        ["train", "--lr", "nan", "--out", "x"],
        ["train", "--block-gamma=-inf", "--out", "x"],
        ["train", "--milestones", "0.5,nan", "--out", "x"],
        ["experiment", "--scale", "1e9"],
        ["analyze", "landscape", "run", "--span", "1e308"],
        ["analyze", "landscape", "run", "--span", "nan"],
    ],
)
def test_every_number_is_finite_and_in_range_when_typed(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "must be" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_missing_tensorboard_is_refused_before_the_run_directory_is_claimed(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails, as when not installed
    refused(capsys, ["train", *QUICK, "--tensorboard", "--out", tmp_path / "r"], "needs the tensorboard package")
    assert not (tmp_path / "r").exists()  # so the plain retry is not refused as "already holds this run"


def test_a_setting_the_recipe_cannot_use_is_refused_with_why(tmp_path, capsys):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("schedule: cosine\nmilestones: [0.25, 0.5]\n")
    for argv in (
        ["experiment", "--preset", "cpu", "--milestones", "0.25,0.5", "--out", tmp_path / "e"],
        ["train", "--config", yaml_file, "--dataset", "digits", "--out", tmp_path / "r"],
    ):
        refused(capsys, argv, "the cosine schedule has none")
    refused(capsys, ["train", *QUICK, "--linear-warmup", "500", "--out", tmp_path / "r"], "longer than the run")
    assert not (tmp_path / "e").exists() and not (tmp_path / "r").exists()
