"""Does reslab's default precision (bf16 autocast on this CPU) cost accuracy? ResNet-20 on the
real CIFAR-10 images, the paper's recipe shortened (lr drops at 50% and 75% of the run), in fp32
and in the default precision, two seeds each, trained by `reslab experiment`; the curves side by
side in one figure, the final errors and wall times in a table.

    python benchmarks/precision_cifar10.py                    # 1,170 iterations on all 50,000 images
    python benchmarks/precision_cifar10.py --iterations 400 --seeds 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from degradation_cifar10 import add_cifar_options, cifar_folder  # noqa: E402

from reslab import runs  # noqa: E402
from reslab.accel import resolve_precision  # noqa: E402
from reslab.config import TrainConfig  # noqa: E402
from reslab.experiment import grid, run_experiment  # noqa: E402
from reslab.summary import mean_std  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"fp32": "#1f77b4", "bf16": "#d62728"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cifar_options(p)
    p.add_argument("--iterations", type=int, default=1170)
    p.add_argument("--eval-every", type=int, default=90)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/bench-precision-cifar10"))
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "precision_cifar10")
    args = p.parse_args()
    folder = cifar_folder(args)
    if folder is None:
        return 2
    import torch

    default = resolve_precision("auto", torch.device("cpu"))
    if default == "fp32":
        print("this CPU has no native bf16: reslab's default is fp32 here, nothing to compare.", file=sys.stderr)
        return 2
    base = TrainConfig(dataset=f"imagefolder:{folder}", iterations=args.iterations, eval_every=args.eval_every)
    curves, lines = {}, []
    for precision in ("fp32", "auto"):
        name = "fp32" if precision == "fp32" else default
        exp = args.out / name
        cells = grid(
            TrainConfig(**{**base.__dict__, "precision": precision}), ["resnet"], [20], list(range(args.seeds))
        )
        t0 = time.perf_counter()
        run_experiment(exp, cells)
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        rows = [runs.read_metrics(d) for d in runs.find_runs(exp)]
        curves[name] = rows
        finals = [r[-1] for r in rows]
        train_m, train_s = mean_std([f["train_error"] for f in finals])
        test_m, test_s = mean_std([f["test_error"] for f in finals])
        seconds = sum(f["seconds"] for f in finals) / len(finals)
        per_seed = ", ".join(f"{100 * f['test_error']:.2f}" for f in finals)
        lines.append(
            f"| {name} | {100 * train_m:.2f} ± {100 * train_s:.2f} | {100 * test_m:.2f} ± {100 * test_s:.2f} "
            f"({per_seed}) | {seconds:.0f} |"
        )
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, rows in curves.items():
        for i, r in enumerate(rows):
            its = [m["iteration"] for m in r]
            label = name if i == 0 else None
            ax.plot(its, [100 * m["train_error"] for m in r], "--", color=COLOURS[name], lw=1.0)
            ax.plot(its, [100 * m["test_error"] for m in r], "-", color=COLOURS[name], lw=2.0, label=label)
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.set_title("ResNet-20 on CIFAR-10: fp32 against bf16 autocast")
    ax.legend(title="dashed: training, solid: test")
    ax.grid(alpha=0.3)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.results.with_suffix(".png"), dpi=110, bbox_inches="tight")
    text = "\n".join(
        [
            "# Precision and accuracy: ResNet-20 on CIFAR-10 (JPEG copy), fp32 against the default",
            "",
            f"Command: `{' '.join(['python benchmarks/precision_cifar10.py', *sys.argv[1:]])}`",
            "",
            f"All 50,000 training images, {args.iterations} iterations of batch 128 (lr 0.1, divided by 10 at 50% "
            f"and 75%), evaluation of the 10,000 test images every {args.eval_every} iterations, seeds "
            f"0..{args.seeds - 1}; the runs of one precision trained side by side, one core each.",
            "",
            "| precision | final training error % | final test error % (per seed) | seconds per run |",
            "|---|---|---|---|",
            *lines,
            "",
            f"![curves]({args.results.with_suffix('.png').name})",
            "",
        ]
    )
    args.results.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
