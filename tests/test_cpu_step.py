"""benchmarks/cpu_step.py runs end to end on a tiny net and writes its table from what it measured."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_step_benchmark_measures_each_variant_in_two_processes(tmp_path):
    out = tmp_path / "step"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "cpu_step.py"), "--nets", "resnet-8", "--sizes", "8"]
    cmd += ["--steps", "2", "--rounds", "1", "--variants", "channels_last,contiguous", "--results", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    record = json.loads(out.with_suffix(".json").read_text())
    assert sorted(record["rates"]) == ["resnet-8 8 channels_last", "resnet-8 8 contiguous"]
    assert all(len(r) == 2 and min(r) > 0 for r in record["rates"].values())  # two processes each
    rows = [line for line in out.with_suffix(".md").read_text().splitlines() if line.startswith("| resnet-8")]
    base, other = record["table"]
    assert rows[0].endswith(f"| {base['images_per_second']:.0f} | 1.00x | {base['warmup_s']:.1f} |")
    ratio = other["images_per_second"] / base["images_per_second"]
    assert rows[1].endswith(f"| {other['images_per_second']:.0f} | {ratio:.2f}x | {other['warmup_s']:.1f} |")


def test_cpu_step_benchmark_refuses_an_unknown_variant(tmp_path):
    script = str(ROOT / "benchmarks" / "cpu_step.py")
    done = subprocess.run(
        [sys.executable, script, "--variants", "nhwc", "--results", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "unknown variants ['nhwc']" in done.stderr
    assert not list(tmp_path.iterdir())
