"""Every value read back from disk is checked before it is used. For each file a reader takes, a
generated set of damaged copies: each value in turn replaced by one of a wrong type, an impossible
number, a huge or deeply nested one. Each costs one sentence and exit 2, or, in the report, only
the run or the section it belongs to; never a traceback, never a verdict on an impossible number."""

import csv
import io
import json
import shutil

import pytest
import torch
from conftest import cfg

from reslab import checkpoints, files, runs
from reslab.cli import main
from reslab.experiment import LocalBackend, grid, run_experiment

DEEP = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
DAMAGE = ["text", -1, 1e308, None, True, [], {}, 2**70, "x" * 20_000, DEEP, list(range(100)), 0.5, -2.5]
IDENTITY = {"steps": 1, "plain": [{"convs": 4, "k": 4, "error": 1.0}], "residual": [{"convs": 4, "k": 2, "error": 0.1}]}
SAMPLED_TRAIN = ("lr", "iterations", "milestones", "dataset", "seed", "eval_every", "schedule", "image_size")


def leaves(value, path=()):
    """The path of every value inside a JSON document (lists by their first item)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if path == ("train",) and k not in SAMPLED_TRAIN:
                continue  # TrainConfig checks all of its fields alike; a sample of them is enough here
            yield path + (k,)
            yield from leaves(v, path + (k,))
    elif isinstance(value, list) and value:
        yield path + (0,)
        yield from leaves(value[0], path + (0,))


def replaced(doc, path, new):
    doc = json.loads(json.dumps(doc))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return doc


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A real two-cell experiment (plain-8, resnet-8) with an analysis result beside it."""
    exp = tmp_path_factory.mktemp("damage") / "exp"
    run_experiment(
        exp,
        grid(cfg(), ["plain", "resnet"], [8], [0]),
        backend=LocalBackend(1),
        spec={"kind": "degradation"},
    )
    files.write_json(exp / "analyses" / "identity.json", IDENTITY)
    return exp


def json_cases(experiment):
    files = {
        "config": experiment / "plain-8-seed0" / "config.json",
        "status": experiment / "plain-8-seed0" / "status.json",
        "experiment": experiment / "experiment.json",
        "identity": experiment / "analyses" / "identity.json",
    }
    for name, path in files.items():
        doc = json.loads(path.read_text())
        for i, where in enumerate(leaves(doc)):
            yield name, path.relative_to(experiment), where, DAMAGE[i % len(DAMAGE)]


@pytest.fixture
def no_rendering(monkeypatch):
    """Figures are drawn from the values as always, but not rendered to pixels (most of a report's
    time): each file gets a PNG's signature only."""
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda self, buf, **kw: buf.write(b"\x89PNG\r\n\x1a\n"))


def report_of(exp, capsys) -> tuple[int, str, str]:
    code = main(["report", str(exp)])
    out = capsys.readouterr()
    html = (exp / "report.html").read_text() if code == 0 else ""
    return code, out.err, html


def test_every_damaged_json_value_costs_a_sentence_or_its_own_part(experiment, tmp_path, capsys, no_rendering):
    checked = 0
    for name, rel, where, bad in json_cases(experiment):
        exp = tmp_path / "exp"
        shutil.rmtree(exp, ignore_errors=True)
        shutil.copytree(experiment, exp)
        doc = json.loads((exp / rel).read_text())
        (exp / rel).write_text(json.dumps(replaced(doc, where, bad)))
        case = f"{rel} {'.'.join(map(str, where))} = {str(bad)[:40]}"
        code, err, html = report_of(exp, capsys)  # any exception but a UserError fails the test here
        assert code in (0, 2), case
        if code == 2:
            assert err.count("\n") == 1 and err.startswith("reslab: error: "), (case, err)
            assert name in ("experiment",) or "plain-8" in err, (case, err)
        elif name in ("config", "status") and "plain-8-seed0" in html.split("Runs left out")[-1]:
            pass  # the damaged run was left out, with its reason
        elif name == "identity" and "identity.json could not be shown" in html:
            pass  # the damaged analysis cost its own section
        else:
            assert "Traceback" not in html, case
        checked += 1
    assert checked > 60


@pytest.mark.parametrize("value", ["x", "-1", "nan", "inf", "1e400", "2.5", ""])
def test_every_damaged_metrics_value_leaves_the_run_out(experiment, tmp_path, capsys, value, no_rendering):
    exp = tmp_path / "exp"
    shutil.copytree(experiment, exp)
    path = exp / "plain-8-seed0" / "metrics.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    for column in runs.METRIC_FIELDS:
        if value == "" and column not in ("iteration", "train_error", "test_error"):
            continue  # an empty optional column is allowed
        if value == "2.5" and not column.endswith("_error"):
            continue  # 2.5 is a loss, a learning rate or a count that could be
        damaged = [dict(r) for r in rows]
        damaged[-1][column] = value
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=runs.METRIC_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(damaged)
        path.write_text(buf.getvalue())
        together, skipped = runs.gather(exp)
        assert [r.name for r in together] == ["resnet-8-seed0"], (column, value)
        assert skipped[0][0] == "plain-8-seed0" and "metrics.csv" in skipped[0][1], (column, value)
        code, err, html = report_of(exp, capsys)
        assert code == 0 and "plain-8-seed0" in html.split("Runs left out")[-1], (column, value, err)


LOOP_DAMAGE = {
    "iteration": [-1, 10**9, 2.5, "4"],
    "seen": [-5, 1.5],
    "seconds": [float("nan"), -1.0, "x"],
    "warmup_until": [10**6, -2],
    "rows": ["x", [{"iteration": 1, "train_error": 7.0, "test_error": 0.1}], [{"bogus": 1}] * 1, [None]],
    "loss_sum": [torch.tensor(float("nan")), torch.tensor(-1.0)],
}


@pytest.mark.parametrize("key", LOOP_DAMAGE)
def test_a_damaged_loop_state_in_a_checkpoint_is_refused(experiment, tmp_path, capsys, key):
    run = tmp_path / "r"
    shutil.copytree(experiment / "resnet-8-seed0", run)
    saved = checkpoints.load_checkpoint(run / "checkpoint.pt")
    runs.write_status(run, "interrupted", "test", iteration=saved["iteration"], total=4)
    for bad in LOOP_DAMAGE[key]:
        state = {**saved, "loop": {**saved["loop"], key: bad}}
        checkpoints.save_checkpoint(run, state)
        argv = ["train", "--config", run / "config.json", "--out", run, "--resume", "--no-progress"]
        assert main([str(a) for a in argv]) == 2, (key, bad)
        err = capsys.readouterr().err
        assert "checkpoint.pt does not fit this run" in err, (key, bad, err)


ANALYSES = {
    "responses": ["--limit", "64"],
    "lesion": ["--samples", "1", "--limit", "64"],
    "gradients": ["--images", "8", "--points", "8", "--lines", "2", "--depths", "8"],
    "landscape": ["--resolution", "3", "--images", "16"],
}


@pytest.fixture(scope="module")
def analysed(experiment, tmp_path_factory):
    """The experiment with every analysis's result, each written by its own command."""
    exp = tmp_path_factory.mktemp("analysed") / "exp"
    shutil.copytree(experiment, exp)
    shutil.rmtree(exp / "analyses")
    cells = [str(exp / "plain-8-seed0"), str(exp / "resnet-8-seed0")]
    for name, options in ANALYSES.items():
        assert main(["analyze", name, *cells, *options, "--quiet"]) == 0, name
    assert main(["analyze", "identity", "--steps", "2", "--max-layers", "4", "--out", str(exp), "--quiet"]) == 0
    argv = ["analyze", "construct", "--from", cells[1], "--depth", "14", "--limit", "64", "--out", str(exp), "--quiet"]
    assert main(argv) == 0
    return exp


def test_every_damaged_analysis_value_costs_its_own_section(analysed, tmp_path, capsys, no_rendering):
    """Each value of each analysis's JSON in turn replaced by a damaging one: the report is still
    written, with that analysis's section saying why it could not be shown (or, where the damage
    is a value the analysis could have written, the section as usual); never a traceback."""
    names = sorted(p.stem for p in (analysed / "analyses").glob("*.json"))
    assert names == ["construct", "gradients", "identity", "landscape", "lesion", "responses"]
    shown, refused = 0, 0
    for name in names:
        rel = f"analyses/{name}.json"
        doc = json.loads((analysed / rel).read_text())
        for i, where in enumerate(leaves(doc)):
            bad = DAMAGE[i % len(DAMAGE)]
            exp = tmp_path / "exp"
            shutil.rmtree(exp, ignore_errors=True)
            shutil.copytree(analysed, exp, ignore=shutil.ignore_patterns("figures"))
            (exp / rel).write_text(json.dumps(replaced(doc, where, bad)))
            case = f"{rel} {'.'.join(map(str, where))} = {str(bad)[:40]}"
            code, err, html = report_of(exp, capsys)  # any exception but a UserError fails the test here
            assert code == 0, (case, err)
            assert "Traceback" not in html, case
            if f"{name}.json could not be shown" in html:
                refused += 1
            else:
                shown += 1
    assert refused > 100 and shown > 0, (refused, shown)  # some damage is a value that could be
