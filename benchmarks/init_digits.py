"""`reslab experiment init --dataset digits` on seeds that were not used while the experiment was
written, each run alone: its verdicts, its table and its wall time, with the machine's load.

    python benchmarks/init_digits.py [--seeds 20,21,22]

Writes benchmarks/results/init_digits.md and .json (and prints the markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def run(seed: int, out: Path) -> dict:
    load = os.getloadavg()[0]
    t = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "reslab",
            "experiment",
            "init",
            "--dataset",
            "digits",
            "--seed",
            str(seed),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{r.stderr[-2000:]}")
    found = json.loads((out / "init.json").read_text())
    return {"seed": seed, "wall": wall, "load_before": load, "load_after": os.getloadavg()[0], "found": found}


def table(results: list[dict]) -> list[str]:
    lines = [
        "| seed | scale | network | train err % | test err % | ‖F‖/‖x‖ init | ‖F‖/‖x‖ end |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in sorted(res["found"]["runs"], key=lambda r: (-r["scale"], r["arch"], r["depth"])):
            ratio = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            lines.append(
                f"| {res['seed']} | {r['scale']:g} | {r['label']} | {100 * r['train_error']:.1f} | "
                f"{100 * r['test_error']:.1f} | {ratio(r['init_ratio'])} | {ratio(r['end_ratio'])} |"
            )
    return lines


def mark(v: dict) -> str:
    return "not testable here" if not v["testable"] else {True: "yes", False: "NO", None: "unclear"}[v["holds"]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="20,21,22")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "init_digits")
    args = p.parse_args()
    import torch

    from reslab.accel import cpu_model, resolve_precision

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in (int(s) for s in args.seeds.split(",")):
            results.append(run(s, Path(tmp) / f"seed{s}"))
    precision = resolve_precision("auto", torch.device("cpu"))
    md = [
        "# `reslab experiment init --dataset digits`, seed by seed",
        "",
        f"Command: `python benchmarks/init_digits.py --seeds {args.seeds}` (each seed's experiment run alone, in a "
        f"fresh directory). Machine: {cpu_model()}, {os.cpu_count()} cores, {precision}, "
        f"Python {platform.python_version()}.",
        "",
        "| seed | wall time | load average before, after | "
        + " | ".join(f"verdict {i + 1}" for i in range(len(results[0]["found"]["verdicts"])))
        + " |",
        "|---|---|---|" + "---|" * len(results[0]["found"]["verdicts"]),
    ]
    for r in results:
        marks = " | ".join(mark(v) for v in r["found"]["verdicts"])
        md.append(f"| {r['seed']} | {r['wall']:.0f} s | {r['load_before']:.2f}, {r['load_after']:.2f} | {marks} |")
    md += ["", "The verdicts:", ""]
    for i, v in enumerate(results[0]["found"]["verdicts"], 1):
        md.append(f"{i}. {v['claim']}")
    md += ["", "What each seed measured (the verdicts' own text):", ""]
    for r in results:
        md.append(f"- seed {r['seed']}:")
        md += [f"  - [{mark(v)}] {v['text']}" for v in r["found"]["verdicts"]]
    md += ["", *table(results), ""]
    text = "\n".join(md)
    args.results.with_suffix(".md").write_text(text)
    slim = [{k: v for k, v in r.items() if k != "found"} | {"verdicts": r["found"]["verdicts"]} for r in results]
    args.results.with_suffix(".json").write_text(json.dumps(slim, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
