"""One training run on one process against the same run on two torchrun processes (gloo), side by
side: images/s and the final numbers, so that what torchrun buys on this machine is measured.

    python benchmarks/ddp_cpu.py [--data imagefolder:/tmp/cifar10-jpeg] [--iterations 80]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from reslab import runs

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic", help="dataset (default synthetic)")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--iterations", type=int, default=80)
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "ddp_cpu.md")
    args = p.parse_args()
    common = ["--dataset", args.data, "--depth", str(args.depth), "--iterations", str(args.iterations)]
    common += ["--eval-every", str(args.iterations // 2), "--no-progress"]
    if args.data != "synthetic":
        common += ["--subset", "5000"]
    launchers = {
        "1 process, all threads": [sys.executable, "-m", "reslab", "train"],
        "2 processes (torchrun, gloo), 1 thread each": [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "reslab",
            "train",
        ],
    }
    lines = ["| launch | images/s (2nd half) | train error | test error |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in launchers.items():
            out = Path(tmp) / str(len(lines))
            subprocess.run([*cmd, *common, "--out", str(out)], check=True, capture_output=True)
            last = runs.read_metrics(out)[-1]
            lines.append(
                f"| {name} | {last['images_per_second']:.0f} | {100 * last['train_error']:.1f}% | "
                f"{100 * last['test_error']:.1f}% |"
            )
    text = "\n".join(
        [
            f"# ResNet-{args.depth}, one process against two torchrun processes on this CPU",
            "",
            f"Command: `python benchmarks/ddp_cpu.py {' '.join(sys.argv[1:])}`".replace("  ", " "),
            "",
            *lines,
            "",
            "Same global batch (128) and data in both; BatchNorm per process in the two-process run.",
            "",
        ]
    )
    args.results.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
