"""Committed results say what the current code derives from their own recorded measurements
(issue 17, item 4): a verdict that the code would no longer print cannot stay in a results file."""

import importlib.util
import json
from pathlib import Path

import pytest

from reslab.summary import summary_table
from reslab.verdicts import Measured, degradation_verdicts

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def benchmark_module():
    spec = importlib.util.spec_from_file_location("degradation_cifar10", RESULTS.parent / "degradation_cifar10.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", sorted(RESULTS.glob("degradation_*.json")), ids=lambda p: p.stem)
def test_committed_degradation_results_are_what_the_code_derives(path):
    data = json.loads(path.read_text())
    assert "runs" in data, f"{path.name} does not record its runs: run its command again"
    verdicts = degradation_verdicts(data["summary"], [Measured.from_json(r) for r in data["runs"]])
    # (results committed before verdicts had `testable` were all testable)
    assert [v.__dict__ for v in verdicts] == [{**v, "testable": v.get("testable", True)} for v in data["verdicts"]]
    md = path.with_suffix(".md").read_text()
    shown = [line for line in md.splitlines() if line.startswith("- [")]
    assert shown == [benchmark_module().verdict_line(v) for v in verdicts]
    assert summary_table(data["summary"]) in md
