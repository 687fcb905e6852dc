"""Wall time of `reslab demo`, this checkout against an earlier revision, runs alternating.

    python benchmarks/demo_time.py [--against REV] [--rounds 3]

Each round runs the demo of this checkout and of REV (checked out into a temporary git worktree
and put first on PYTHONPATH, so the same environment runs both) into fresh directories, one after
the other; the machine is shared, so the two alternate and only their difference is meaningful.
The demos' printed tables must be equal (the speed changes may not change the results), unless
--recipe-changed says the demo's recipe changed on purpose between the two revisions.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_demo(src: Path, out: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "reslab", "demo", "--out", str(out)], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"demo failed ({src}):\n{r.stderr[-2000:]}")
    # The results, without the lines that hold times, and without the output directory's name.
    results = "\n".join(
        line.replace(str(out), "OUT")
        for line in r.stdout.splitlines()
        if not re.search(r" s so far\)|finished in", line)
    )
    return wall, results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", default="HEAD~1", help="git revision to compare with (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--recipe-changed", action="store_true", help="the demo's recipe differs between the two: results may differ"
    )
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "demo_time.md")
    args = p.parse_args()
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.against], capture_output=True, text=True, check=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    times = {"this checkout": [], rev: []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tmp / "old"), rev], check=True)
        try:
            sources = {"this checkout": ROOT / "src", rev: tmp / "old" / "src"}
            outputs = {}
            for i in range(args.rounds):
                for name, src in sources.items():
                    wall, outputs[name] = run_demo(src, tmp / f"demo-{i}-{len(times[name])}-{name[:4]}")
                    times[name].append(wall)
                    print(f"round {i + 1}: {name}: {wall:.1f} s", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "old")], check=False)
    same = len(set(outputs.values())) == 1
    mine, theirs = statistics.mean(times["this checkout"]), statistics.mean(times[rev])
    lines = [
        "# `reslab demo`: wall time, this checkout against an earlier revision",
        "",
        f"Command: `python benchmarks/demo_time.py --against {args.against} --rounds {args.rounds}"
        + (" --recipe-changed" if args.recipe_changed else "")
        + "` "
        f"(this checkout: {head}, with the changes of the working tree if any)",
        "",
        "| code | wall time per round (s) | mean |",
        "|---|---|---|",
        *(f"| {n} | {', '.join(f'{t:.1f}' for t in ts)} | {statistics.mean(ts):.1f} |" for n, ts in times.items()),
        "",
        f"This checkout takes {mine / theirs:.2f}x the time of {rev} ({theirs - mine:+.1f} s saved on average). "
        + (
            "The demos printed the same results."
            if same
            else "The results differ: the demo's recipe changed between the two."
            if args.recipe_changed
            else "The demos' results DIFFER."
        ),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.results.write_text(text)
    return 0 if same or args.recipe_changed else 1


if __name__ == "__main__":
    sys.exit(main())
