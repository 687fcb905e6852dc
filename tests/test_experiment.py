import csv

import pytest

from reslab import files, runs
from reslab.cells import cell_name
from reslab.config import TrainConfig
from reslab.experiment import GridProgress, LocalBackend, grid, progress_line, run_experiment
from reslab.report import build_report
from reslab.summary import summarize
from reslab.verdicts import degradation_verdicts


def base():
    return TrainConfig(dataset="digits", iterations=12, batch_size=64, eval_every=6, precision="fp32", device="cpu")


def test_grid_runs_skips_finished_and_summarises(tmp_path):
    cells = grid(base(), ["plain", "resnet"], [8], [0, 1])
    outcomes = run_experiment(tmp_path, cells, backend=LocalBackend(1))
    assert [o.state for o in outcomes] == ["finished"] * 4
    assert sorted(p.name for p in runs.find_runs(tmp_path)) == [
        "plain-8-seed0",
        "plain-8-seed1",
        "resnet-8-seed0",
        "resnet-8-seed1",
    ]
    stamp = (tmp_path / "plain-8-seed0" / "metrics.csv").stat().st_mtime_ns
    again = run_experiment(tmp_path, cells, backend=LocalBackend(1))
    assert all(o.skipped for o in again)
    assert (tmp_path / "plain-8-seed0" / "metrics.csv").stat().st_mtime_ns == stamp
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["arch"], r["depth"], r["runs"]) for r in rows] == [("plain", "8", "2"), ("resnet", "8", "2")]
    finals = [runs.read_metrics(tmp_path / f"plain-8-seed{s}")[-1]["train_error"] for s in (0, 1)]
    assert float(rows[0]["train_error_mean"]) == pytest.approx(sum(finals) / 2)


def test_parallel_processes_give_the_same_numbers(tmp_path):
    cells = grid(base(), ["resnet"], [8], [0, 1])
    run_experiment(tmp_path / "seq", cells, backend=LocalBackend(1))
    run_experiment(tmp_path / "par", cells, backend=LocalBackend(2))
    for s in (0, 1):
        a = runs.read_metrics(tmp_path / "seq" / f"resnet-8-seed{s}")
        b = runs.read_metrics(tmp_path / "par" / f"resnet-8-seed{s}")
        assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


def test_cells_sharing_a_gpu_on_streams_learn_what_they_learn_alone(tmp_path):
    """--share-gpu streams: one worker process trains its cells on threads (on a GPU each on its own
    CUDA stream, issue 14); each learns exactly what it learns alone, weights included."""
    cells = grid(base(), ["plain", "resnet"], [8], [0, 1])
    run_experiment(tmp_path / "seq", cells, backend=LocalBackend(1))
    outcomes = run_experiment(tmp_path / "streams", cells, backend=LocalBackend(1, 4, "streams"))
    assert [o.state for o in outcomes] == ["finished"] * 4
    strip = lambda rows: [{k: v for k, v in r.items() if k not in runs.TIMING_FIELDS} for r in rows]  # noqa: E731
    for name in ("plain-8-seed0", "plain-8-seed1", "resnet-8-seed0", "resnet-8-seed1"):
        a, b = tmp_path / "seq" / name, tmp_path / "streams" / name
        assert strip(runs.read_metrics(a)) == strip(runs.read_metrics(b)), name
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes(), name


def test_interrupted_cell_is_resumed(tmp_path):
    cells = grid(base(), ["resnet"], [8], [0])
    run_experiment(tmp_path, cells, backend=LocalBackend(1))
    d = tmp_path / "resnet-8-seed0"
    runs.write_status(d, "interrupted")  # as if killed after its last checkpoint
    (d / "model.safetensors").unlink()
    out = run_experiment(tmp_path, cells, backend=LocalBackend(1))
    assert out[0].state == "finished" and (d / "model.safetensors").exists()


def fake_run(root, arch, depth, seed, train_errors, test_error, params=1000, train_loss=1.0):
    """A run directory with given curves, for checking verdicts and the report."""
    d = root / f"{arch}-{depth}-seed{seed}"
    cfg = TrainConfig(arch=arch, depth=depth, seed=seed, dataset="digits")
    files.write_json(
        d / "config.json",
        {
            "train": cfg.__dict__,
            "model": {"arch": arch, "depth": depth},
            "resolved": {
                "parameters": params * depth,
                "macs": 10 * depth,
                "iterations": 100,
                "milestones": [50, 75],
                "precision": "fp32",
                "augment": False,
            },
            "data": {
                "name": "digits",
                "classes": ["<b>zero</b>"],
                "image_shape": [1, 8, 8],
                "train_size": 10,
                "val_size": 0,
                "test_size": 5,
            },
            "environment": {"device": "cpu", "torch": "x"},
        },
    )
    rows = [
        {
            "epoch": i,
            "iteration": 10 * (i + 1),
            "lr": 0.1,
            "train_loss": train_loss,
            "train_error": e,
            "test_loss": 1.0,
            "test_error": test_error,
            "seconds": i,
            "images_per_second": 1,
        }
        for i, e in enumerate(train_errors)
    ]
    runs.write_metrics(d, rows)
    runs.write_status(d, "finished")
    return d


def test_verdicts_follow_the_numbers(tmp_path):
    for s in (0, 1):
        fake_run(tmp_path, "plain", 20, s, [0.5, 0.1, 0.0], 0.05)
        fake_run(tmp_path, "plain", 56, s, [0.8, 0.6, 0.4 + 0.02 * s], 0.45)
        fake_run(tmp_path, "resnet", 20, s, [0.4, 0.05, 0.02], 0.04)
        fake_run(tmp_path, "resnet", 56, s, [0.3, 0.005, 0.0], 0.03)
    from reslab.runs import load_runs

    v = {x.claim.split(" (")[0]: x for x in degradation_verdicts(summarize(tmp_path), load_runs(tmp_path))}
    assert v["Deeper plain nets degrade"].holds and "41.0%" in v["Deeper plain nets degrade"].text
    assert "2 of 2 seeds" in v["Deeper plain nets degrade"].text
    assert v["Deeper residual nets do not degrade"].holds
    assert v["Shortcuts help at depth 56"].holds and "removes the degradation" in v["Shortcuts help at depth 56"].text
    assert v["Residual nets converge faster"].holds and "never does" in v["Residual nets converge faster"].text
    assert v["Identity shortcuts are free"].holds


def test_verdicts_say_no_when_there_is_no_degradation(tmp_path):
    fake_run(tmp_path, "plain", 20, 0, [0.5, 0.1], 0.05)
    fake_run(tmp_path, "plain", 56, 0, [0.5, 0.105], 0.05)
    from reslab.runs import load_runs

    (v,) = degradation_verdicts(summarize(tmp_path), load_runs(tmp_path))
    assert v.holds is False and "no degradation" in v.text


def test_a_cell_without_a_finished_run_is_named_not_judged(tmp_path):
    fake_run(tmp_path, "plain", 20, 0, [0.5, 0.1], 0.05)
    fake_run(tmp_path, "plain", 32, 0, [0.5, 0.3], 0.05)
    runs.write_status(fake_run(tmp_path, "plain", 56, 0, [0.6], 0.5), "failed", "worker died")
    from reslab.runs import load_runs

    summary = summarize(tmp_path)
    assert [(r["depth"], r["runs"], r["status"]) for r in summary] == [
        (20, 1, "finished"),
        (32, 1, "finished"),
        (56, 0, "failed"),
    ]
    missing, plain = degradation_verdicts(summary, load_runs(tmp_path))
    assert missing.holds is None and missing.claim == "plain-56 has no finished run" and "failed" in missing.text
    assert "plain-32" in plain.claim and plain.holds  # judged on the depths that finished
    html = build_report(tmp_path)
    assert "plain-56 has no finished run" in html and html.count(">failed<") >= 2  # summary and runs tables


def test_report_is_self_contained_and_escapes_names(tmp_path):
    fake_run(tmp_path, "plain", 20, 0, [0.5, 0.1], 0.05)
    d = fake_run(tmp_path, "plain", 56, 0, [0.6, 0.5], 0.5)
    runs.write_status(d, "failed", "<script>alert(1)</script>")
    html = build_report(tmp_path)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # nothing to fetch
    assert (tmp_path / "figures" / "error_curves.png").exists() and (tmp_path / "figures" / "error_curves.svg").exists()


def test_a_diverging_cell_is_recorded_and_the_others_go_on(tmp_path):
    import dataclasses

    good = grid(base(), ["plain"], [8], [0])[0]
    bad = dataclasses.replace(good, arch="resnet", lr=1e9, warmup="on", iterations=200, eval_every=10)
    outcomes = run_experiment(tmp_path, [bad, good], backend=LocalBackend(1))
    assert [o.state for o in outcomes] == ["diverged", "finished"]
    assert runs.read_status(tmp_path / "resnet-8-seed0")["state"] == "diverged"
    rows = {r["arch"]: r for r in summarize(tmp_path)}
    assert rows["resnet"]["status"] == "diverged" and rows["resnet"]["runs"] == 0
    html = build_report(tmp_path)
    assert 'class="state-diverged"' in html and "NaN or infinite at iteration" in html


def test_grid_progress_gives_an_overall_eta_and_names_nodes_only_when_several():
    statuses = {
        "a": {"state": "finished"},
        "b": {"state": "running", "iteration": 50, "total": 100, "host": "n1"},
        "c": {"state": "new"},
        "d": {"state": "new"},
    }
    line = progress_line(statuses, elapsed=300.0)  # 1.5 of 4 cells in 300 s: 500 s to go
    assert line == "progress: 1 of 4 finished; running: b 50/100; about 8 min left"
    statuses["c"] = {"state": "running", "iteration": 0, "total": 100, "host": "n2"}
    assert "b 50/100 on n1, c 0/100 on n2" in progress_line(statuses, 300.0)


def test_grid_eta_weighs_each_cell_by_its_depth(tmp_path):
    """A 56-layer step costs about 3 of a 20-layer one; counting cells alike, the CPU preset's
    grid (deepest first) said "about 95 min left" early in a run that took under an hour."""

    cells = [TrainConfig(arch=a, depth=d, seed=s) for d in (20, 56) for a in ("plain", "resnet") for s in (0, 1)]
    weights = GridProgress(tmp_path, cells).weights
    assert weights == {cell_name(c): float(c.depth) for c in cells}
    statuses = {n: {"state": "new"} for n in weights}
    for n in ("plain-56-seed0", "plain-56-seed1"):
        statuses[n] = {"state": "running", "iteration": 900, "total": 2000}
    # 2 x 56 x 0.45 of 4 x (20 + 56) done in 570 s: 2,868 s to go (unweighted: 4,496 s).
    assert progress_line(statuses, 570.0, weights).endswith("; about 48 min left")
    assert progress_line(statuses, 570.0).endswith("; about 75 min left")
