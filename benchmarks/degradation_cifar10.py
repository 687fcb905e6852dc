"""The degradation comparison on real CIFAR-10 images at a CPU-sized budget.

Uses the JPEG CIFAR-10 in ../shared/data/cifar10-jpeg.tar.gz (image-folder layout), trains
plain-20, plain-56, ResNet-20 and ResNet-56 on a class-balanced subset for a few epochs, and
writes the numbers, verdicts and wall time to benchmarks/results/.

    python benchmarks/degradation_cifar10.py                       # defaults below
    python benchmarks/degradation_cifar10.py --subset 10000 --epochs 20 --seeds 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tarfile
import time
from pathlib import Path

import torch

from reslab.config import TrainConfig
from reslab.experiment import grid, run_experiment
from reslab.report import write_report
from reslab.runs import load_runs
from reslab.summary import summarize, summary_table
from reslab.verdicts import Measured, degradation_verdicts, mark

ROOT = Path(__file__).resolve().parents[1]
TARBALL = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def extract(tarball: Path, dest: Path) -> Path:
    if not (dest / "train").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(dest, filter="data")
    return dest


def add_cifar_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tarball", type=Path, default=TARBALL)
    p.add_argument("--extract-to", type=Path, default=Path("/tmp/cifar10-jpeg"))


def cifar_folder(args) -> Path | None:
    """The unpacked image folder of --tarball, or None (with a message) when the tarball is missing."""
    if not args.tarball.exists():
        print(f"{args.tarball} not found: this benchmark needs the shared CIFAR-10 JPEG tarball.", file=sys.stderr)
        return None
    return extract(args.tarball, args.extract_to)


def len_test(all_runs: list[dict]) -> int:
    return all_runs[0]["config"]["data"]["test_size"]


def verdict_line(v) -> str:
    """A verdict as the results file shows it (tests/test_results.py checks it against the code)."""
    return f"- [{mark(v.holds)}] **{v.claim}**: {v.text}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cifar_options(p)
    p.add_argument("--subset", type=int, default=5000)
    p.add_argument("--epochs", type=float, default=30)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=195, help="iterations between evaluations (5 epochs of 5000)")
    p.add_argument(
        "--warmup",
        choices=["auto", "on", "off"],
        default="auto",
        help="the paper's warm-up; auto: only for depth >= 110, as in the paper",
    )
    p.add_argument("--depths", default="20,56")
    p.add_argument("--out", type=Path, default=Path("runs/bench-degradation-cifar10"))
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "degradation_cifar10_jpeg")
    args = p.parse_args()
    folder = cifar_folder(args)
    if folder is None:
        return 2
    depths = [int(d) for d in args.depths.split(",")]
    base = TrainConfig(
        dataset=f"imagefolder:{folder}",
        subset=args.subset,
        test_subset=0,  # every test image, whatever the training subset
        epochs=args.epochs,
        warmup=args.warmup,
        eval_every=args.eval_every,
    )
    cells = grid(base, ["plain", "resnet"], depths, list(range(args.seeds)))
    t0 = time.perf_counter()
    run_experiment(args.out, cells)
    wall = time.perf_counter() - t0
    summary = summarize(args.out)
    all_runs = load_runs(args.out)
    verdicts = degradation_verdicts(summary, all_runs)
    # Training time of each run from its own metrics.csv (unchanged when the grid is re-run).
    per_run = ", ".join(f"{r['name']} {r['metrics'][-1]['seconds']:.0f} s" for r in all_runs if r["metrics"])
    write_report(args.out)
    table = summary_table(summary)
    command = "python " + " ".join(
        [str(Path(sys.argv[0]).relative_to(ROOT) if Path(sys.argv[0]).is_absolute() else sys.argv[0]), *sys.argv[1:]]
    )
    lines = [
        "# Degradation on real CIFAR-10 (JPEG copy), CPU budget",
        "",
        f"Command: `{command}`",
        "",
        f"Data: {folder} (from {args.tarball.name}), class-balanced subset of {args.subset} training images, "
        f"all {len_test(all_runs):,} test images; {args.epochs:g} epochs, lr drops at 50% and 75%, batch 128, "
        "pad-crop-flip, "
        f"warm-up {args.warmup} (lr 0.01 until training error < 80%; auto: depth >= 110 only).",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}. Training time per run (two runs at a time, one thread each): {per_run}. "
        f"Wall time of this invocation: {wall:.0f} s (finished runs are not trained again).",
        "",
        "```",
        table,
        "```",
        "",
        *[verdict_line(v) for v in verdicts],
        "",
        f"Per-run curves and the report: `{args.out}/` (not committed).",
        "",
    ]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".md").write_text("\n".join(lines))
    args.results.with_suffix(".json").write_text(
        json.dumps(
            {
                "command": command,
                "wall_seconds": round(wall, 1),
                "summary": summary,
                "runs": [Measured.of(r).to_json() for r in all_runs],
                "verdicts": [v.__dict__ for v in verdicts],
            },
            indent=2,
        )
        + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
