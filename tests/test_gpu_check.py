"""benchmarks/gpu_check.py runs where a GPU is lent only now and then: its code path is checked
here on the CPU with --smoke (tiny sizes), so that the day a GPU is there it runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reslab import accel

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_and_writes_its_results(tmp_path):
    out = tmp_path / "gpu_check"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,  # generous: a loaded 2-core machine can be many times slower than an idle one
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["complete"] is True  # (results are also written after every phase, for a cut-short run)
    assert set(result["alone"]) == {"plain-8", "resnet-8"}
    assert all(v["images_per_second"] > 0 and v["seconds_per_iteration"] > 0 for v in result["alone"].values())
    together = result["concurrent"]["2"]
    assert len(together["per_run_images_per_second"]) == 2 and together["aggregate_images_per_second"] > 0
    at_once = result["all_at_once"]
    assert {"plain-8", "resnet-8"} <= set(at_once) and at_once["resnet-8"]["iterations"] == 8
    streams = result["grid_streams"]  # the same grid on the threads (streams) of one process
    assert {"plain-8", "resnet-8"} <= set(streams) and streams["resnet-8"]["iterations"] == 8
    # The paper-length grid is its longest run's seconds scaled to 64k iterations, plus start-up.
    longest = max(at_once[n]["seconds"] * 64_000 / 8 for n in ("plain-8", "resnet-8"))
    assert at_once["paper_length_seconds"] == pytest.approx(longest + at_once["start_up_seconds"])
    assert 0 < at_once["start_up_seconds"] < at_once["wall_seconds"]
    fused = result["fused"]["resnet-8"]
    assert fused["single"] > 0 and fused["fused"]["2"]["channels_last"] > 0 and fused["fused"]["2"]["contiguous"] > 0
    assert result["host_syncs"] == {"skipped": "CUDA only"}  # CUDA's sync debug mode counts them
    assert set(result["accuracy"]) == {"auto", "auto graphed", "fp32"}
    assert all(v["images_per_second"] > 0 and v["vs_eager"] > 0 for v in result["graphed"].values())
    assert set(result["graphed"]) == {"plain-8", "resnet-8"}
    if accel.compiler_missing(torch.device("cpu")) is None:
        assert result["compiled"]["resnet-8"]["images_per_second"] > 0
    else:  # recorded as a result, not a crash
        assert "cannot work here" in result["compiled"]["resnet-8"]["error"]
    graphs = result["graphs"]
    assert set(graphs) == {"eager", "eager, cuDNN autotuner", "default", "reduce-overhead", "2 fused, default"}
    assert graphs["eager"]["images_per_second"] > 0 and graphs["eager, cuDNN autotuner"]["images_per_second"] > 0
    assert result["conventional"]["resnet-8"]["seconds_per_iteration"] > 0
    if accel.compiler_missing(torch.device("cpu")) is None:
        assert (
            graphs["reduce-overhead"]["images_per_second"] > 0 and graphs["2 fused, default"]["images_per_second"] > 0
        )
    grid = result["extrapolated_seconds"]
    assert grid["2_at_a_time"] > 0 and grid["one_at_a_time"] > 0
    md = out.with_suffix(".md").read_text()
    assert (
        "## Several resnet-8 at once" in md
        and "## The whole grid at once" in md
        and "## K networks fused into one module" in md
    )


def test_gpu_check_refuses_to_run_without_a_gpu_or_smoke(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "g")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "no GPU is visible" in r.stderr
