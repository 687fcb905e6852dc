"""Fig. 6's shape seed by seed: each seed's final training and test error at every depth of an
experiment directory, and whether plain error rises and residual error falls at every step.

    python benchmarks/depth_by_seed.py EXPERIMENT_DIR

Prints a markdown table and one line per (architecture, seed).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(exp: Path) -> int:
    from reslab import runs
    from reslab.models import ARCHS, display

    records = [r for r in runs.gather(exp)[0] if r.state == "finished" and r.metrics]
    archs = sorted({r.arch for r in records}, key=list(ARCHS).index)
    depths = sorted({r.depth for r in records})
    seeds = sorted({r.seed for r in records})
    final = {(r.arch, r.depth, r.seed): r.final for r in records}
    print("| network | " + " | ".join(f"seed {s} train / test %" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    for a in archs:
        for d in depths:
            cells = [final.get((a, d, s)) for s in seeds]
            text = [f"{100 * c['train_error']:.1f} / {100 * c['test_error']:.1f}" if c else "-" for c in cells]
            print(f"| {display(a, d)} | " + " | ".join(text) + " |")
    print()
    for a in archs:
        rising = not ARCHS[a].residual
        for s in seeds:
            errs = [final[(a, d, s)]["train_error"] for d in depths if (a, d, s) in final]
            steps = [b > c if rising else b < c for c, b in zip(errs, errs[1:])]
            word = "rises" if rising else "falls"
            print(
                f"{display(a, 0)[:-2]} seed {s}: training error {word} at {sum(steps)} of {len(steps)} steps of depth "
                f"({' -> '.join(f'{100 * e:.1f}' for e in errs)})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
