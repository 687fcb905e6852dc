"""Whether every verdict `reslab demo` prints is settled, seed by seed: each seed's demo run alone
(`reslab demo --seed S`), its verdicts and its wall time.

    python benchmarks/demo_seeds.py [--seeds 0,1,2,3,4] [-- EXTRA DEMO FLAGS]

A verdict is settled when it is yes, NO or "not testable here" (with the reason and the command
that does test it); "?" is not. Writes benchmarks/results/demo_seeds.md (and prints it); exit
status 1 when some verdict of some seed is "?".
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERDICT = re.compile(r"^\[(yes|NO|unclear|tie|not testable here)\] ([^:]+):")
ROW = re.compile(r"^(plain|resnet)-(\d+)\s+[\d,]+\s+[\d.]+\s+\d+\s+([\d.]+)")


def run(seed: int, out: Path, extra: list[str], prefix: tuple[str, ...] = ("-m", "reslab")) -> dict:
    """One `reslab demo --seed S` alone (prefix: how Python starts reslab's CLI)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, *prefix, "demo", "--seed", str(seed), "--out", str(out), *extra],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"demo --seed {seed} failed:\n{r.stderr[-2000:]}")
    lines = r.stdout.splitlines()
    verdicts = {m[2]: m[1] for line in lines if (m := VERDICT.match(line))}
    errors = {f"{m[1]}-{m[2]}": float(m[3]) for line in lines if (m := ROW.match(line))}
    return {"seed": seed, "wall": wall, "verdicts": verdicts, "train_error": errors, "load": os.getloadavg()[0]}


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "demo_seeds.md")
    p.add_argument("extra", nargs="*", help="more flags for reslab demo (after --)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in seeds:
            results.append(run(s, Path(tmp) / f"seed{s}", args.extra))
            print(f"seed {s}: {results[-1]['wall']:.0f} s", file=sys.stderr, flush=True)
    claims = list(dict.fromkeys(c for r in results for c in r["verdicts"]))
    nets = list(dict.fromkeys(n for r in results for n in r["train_error"]))
    from reslab.accel import cpu_model  # here: the driver imports torch only once the runs are done

    cpu = cpu_model()
    unsettled = [(r["seed"], c) for r in results for c in claims if r["verdicts"].get(c, "?") == "?"]
    flags = " ".join(args.extra)
    lines = [
        "# `reslab demo`: every verdict, seed by seed",
        "",
        f"Command: `python benchmarks/demo_seeds.py --seeds {args.seeds}{' -- ' + flags if flags else ''}` "
        f"(each seed is `reslab demo --seed S{' ' + flags if flags else ''}`, one after another). "
        f"Machine: {cpu}, {os.cpu_count()} cores.",
        "",
        "| claim | " + " | ".join(f"seed {r['seed']}" for r in results) + " |",
        "|---|" + "---|" * len(results),
        *(f"| {c} | " + " | ".join(r["verdicts"].get(c, "(missing)") for r in results) + " |" for c in claims),
        "",
        "Final training error (%, the running error of the last epoch's batches):",
        "",
        "| network | " + " | ".join(f"seed {r['seed']}" for r in results) + " |",
        "|---|" + "---|" * len(results),
        *(f"| {n} | " + " | ".join(percent(r["train_error"].get(n)) for r in results) + " |" for n in nets),
        "",
        "| | " + " | ".join(f"seed {r['seed']}" for r in results) + " |",
        "|---|" + "---|" * len(results),
        "| wall time (s) | " + " | ".join(f"{r['wall']:.0f}" for r in results) + " |",
        "| load average after (1 min) | " + " | ".join(f"{r['load']:.2f}" for r in results) + " |",
        "",
        (
            "Every verdict is settled on every seed."
            if not unsettled
            else "Unsettled (?): " + ", ".join(f"seed {s}: {c}" for s, c in unsettled) + "."
        ),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.results.write_text(text)
    return 1 if unsettled else 0


if __name__ == "__main__":
    sys.exit(main())
