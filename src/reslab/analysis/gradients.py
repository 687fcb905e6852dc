"""Gradient flow: per-layer gradient norms, and shattered gradients (Balduzzi et al. 2017).

Per-layer norms: ||dL/dW|| of every conv weight for one batch of training images, BN in train
mode (batch statistics, as during training; running statistics left untouched), at
initialisation (a fresh net built with the run's seed) and with the trained weights.

Shattered gradients: the gradient of the top logit with respect to the input, at `points` inputs
evenly spaced on a short line through an image, BN in eval mode; the mean correlation between
the gradients at neighbouring points. Nets at initialisation get their BN running statistics
from a few batches of real images first, so that eval mode is meaningful.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Annotated

import msgspec
import torch
import torch.nn as nn
import torch.nn.functional as F

from reslab import style
from reslab.analysis.common import (
    add_run_args,
    caption,
    load_split,
    output_dir,
    progress_bar,
    write_result,
)
from reslab.models import CifarNet, build_model
from reslab.options import int_list, positive_int
from reslab.page import esc, figure, table
from reslab.plots import Figure, save, styled, subplots
from reslab.schema import Count, Name, NonNegative, OfRun, Record


def conv_gradient_norms(model: CifarNet, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """||dL/dW|| of each conv weight (in forward order), cross-entropy on (x, y), train-mode BN."""
    net = copy.deepcopy(model).train()  # a copy, so running statistics stay as they were
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    return [m.weight.grad.norm().item() for m in convs if m.weight.grad is not None]


@torch.no_grad()
def calibrate_bn(model: CifarNet, x: torch.Tensor, batch_size: int = 256) -> CifarNet:
    """Set BN running statistics to the exact averages over x (momentum None = cumulative)."""
    net = copy.deepcopy(model)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    for i in range(0, len(x), batch_size):
        net(x[i : i + batch_size])
    return net.eval()


def gradient_correlation(
    model: CifarNet, image: torch.Tensor, points: int = 128, radius: float = 0.5, seed: int = 0
) -> float:
    """Mean Pearson correlation of input gradients at neighbouring points of a line segment of
    length 2 * radius (in normalised pixel units, along a random unit-RMS direction)."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(image.shape, generator=gen)
    direction /= direction.pow(2).mean().sqrt()
    t = torch.linspace(-radius, radius, points).view(-1, 1, 1, 1)
    xs = (image.unsqueeze(0) + t * direction.unsqueeze(0)).requires_grad_(True)
    model.eval()
    logits = model(xs)
    top = logits[points // 2].argmax()
    (grad,) = torch.autograd.grad(logits[:, top].sum(), xs)
    g: torch.Tensor = grad.flatten(1)
    g = g - g.mean(1, keepdim=True)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (g[:-1] * g[1:]).sum(1).mean().item()


def correlation_spread(model: CifarNet, images: torch.Tensor, points: int = 128, progress=None) -> dict:
    """gradient_correlation on one line through each of `images`, each along its own random
    direction: the mean, the standard deviation over lines, and every value (one line is noisy)."""
    values = []
    for i, image in enumerate(images):
        values.append(gradient_correlation(model, image, points, seed=i))
        if progress:
            progress()
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return {"correlation": mean, "correlation_std": std, "values": values}


# A correlation, with room for float rounding.
Correlation = Annotated[float, msgspec.Meta(ge=-1.001, le=1.001)]


class Spread(Record):
    """Correlations of neighbouring input gradients on each line, their mean and std."""

    correlation: Correlation
    correlation_std: NonNegative
    values: list[Correlation]


class Norms(Record):
    init: list[NonNegative]
    trained: list[NonNegative]


class GradientsRun(OfRun):
    norms: Norms
    correlation_trained: Spread


class Shattered(Spread):
    arch: Name
    depth: Count


class Shattering(Record):
    rows: list[Shattered]


class Result(Record):
    """analyses/gradients.json."""

    images: Count
    points: Count
    lines: Count
    runs: list[GradientsRun]
    shattering: Shattering


# ---------------------------------------------------------------------------------------------
# `reslab analyze gradients` (the parts every analysis has: analysis/__init__.py)

FIGURES = ["gradient_norms", "shattering"]  # under OUT/figures, each as .png and .svg
HELP = (
    "per-layer gradient norms at initialisation and after training (train-mode BN, one batch), and the "
    "correlation of input gradients at neighbouring inputs against depth (shattered gradients, at init)"
)
SLOW = True


def add_args(p) -> None:
    add_run_args(p)
    p.add_argument(
        "--depths",
        type=int_list,
        default=[8, 20, 56, 110],
        help="depths for the shattering curve (default 8,20,56,110)",
    )
    p.add_argument("--images", type=positive_int, default=128, help="gradient-norm batch (default %(default)s)")
    p.add_argument("--points", type=positive_int, default=128, help="inputs along each line (default %(default)s)")
    p.add_argument(
        "--lines",
        type=positive_int,
        default=4,
        help="lines (each through its own image, along its own random direction) averaged (default 4)",
    )


def command(args) -> tuple[dict, Path]:
    out = output_dir(args.runs, args.out, "gradients")
    return analyze(args.runs, out, args.depths, args.images, args.points, args.dataset, args.data_dir, args.lines), out


def summary(r: dict) -> list[str]:
    return [
        f"{row['arch']}-{row['depth']} at init: neighbouring-gradient correlation {row['correlation']:.3f} "
        f"± {row['correlation_std']:.3f} over {len(row['values'])} lines"
        for row in r["shattering"]["rows"]
    ]


def analyze(
    run_dirs: list[Path],
    out=None,
    depths=(8, 20, 56, 110),
    images=128,
    points=128,
    dataset=None,
    data_dir=None,
    lines=4,
) -> dict:
    results = []
    run = None
    bar = progress_bar((2 + lines) * len(run_dirs) + 2 * len(depths) * lines, "gradients")
    for d in run_dirs:
        run = load_split(d, "train", images, dataset, data_dir)
        torch.manual_seed(run.config.train.seed)
        init = build_model(run.config.model)
        results.append(
            {
                "run": run.dir.name,
                "label": run.label,
                "arch": run.arch,
                "depth": run.depth,
                "norms": {
                    "init": conv_gradient_norms(init, run.x, run.y),
                    "trained": conv_gradient_norms(run.model, run.x, run.y),
                },
                "correlation_trained": correlation_spread(run.model, run.x[:lines], points, bar.update),
            }
        )
        bar.update(2)
    # Shattering against depth, at initialisation, on the runs' input shape and data.
    assert run is not None  # at least one run (the CLI requires one)
    base = run.config.model
    rows = []
    for arch in ("plain", "resnet"):
        for depth in depths:
            torch.manual_seed(0)
            net = build_model(dataclasses.replace(base, arch=arch, depth=depth))
            net = calibrate_bn(net, run.x)
            spread = correlation_spread(net, run.x[:lines], points, bar.update)
            rows.append({"arch": arch, "depth": depth, **spread})
    bar.close()
    out = output_dir(run_dirs, out, "gradients")
    result = {"images": len(run.y), "points": points, "lines": lines, "runs": results, "shattering": {"rows": rows}}
    write_result(out, "gradients", result)
    heading = "Gradient norm per layer, one batch"
    plot_norms(results, out / "figures" / "gradient_norms", f"{heading}\n{caption(run_dirs, len(run.y), 'training')}")
    plot_shattering(result["shattering"], out / "figures" / "shattering")
    return result


@styled
def plot_norms(results: list[dict], path: Path | None = None, title: str = "") -> Figure | list[Path]:
    fig, axes = subplots(1, 2, figsize=(13, 4.8), sharey=True, layout="constrained")
    for ax, when in zip(axes, ("init", "trained")):
        for r in sorted(results, key=lambda r: -r["depth"]):  # shallow nets drawn last, on top
            values = r["norms"][when]
            ax.plot(
                range(1, len(values) + 1), values, label=r["label"], **{**style.net(r["arch"], r["depth"]), "ms": 3}
            )
        ax.set_yscale("log")
        ax.set_xlabel("3x3 conv layer")
        style.integer_axis(ax)
        ax.set_title("at initialisation" if when == "init" else "after training")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    axes[0].set_ylabel("‖∂L/∂W‖")
    style.title(fig, title)
    return fig if path is None else save(fig, path)


@styled
def plot_shattering(result: dict, path: Path | None = None) -> Figure | list[Path]:
    fig, ax = subplots(figsize=(7.5, 4.8), layout="constrained")
    for arch in ("plain", "resnet"):
        rows = [r for r in result["rows"] if r["arch"] == arch]
        if rows:
            depths, mean = [r["depth"] for r in rows], [r["correlation"] for r in rows]
            std = [r.get("correlation_std", 0) for r in rows]
            ax.plot(depths, mean, color=style.colour(arch), lw=2.2, label=f"{arch} (mean over lines; band ± std)")
            style.band(ax, depths, mean, std, style.colour(arch))
            for r in rows:
                ax.plot(
                    [r["depth"]],
                    [r["correlation"]],
                    ls="none",
                    ms=8,
                    mec="white",
                    **{k: v for k, v in style.net(arch, r["depth"]).items() if k in ("color", "marker")},
                )
    ax.set_xlabel("depth (layers)")
    ax.set_xticks(sorted({r["depth"] for r in result["rows"]}))
    ax.set_ylim(0, 1.02)  # 0: fully shattered, 1: every neighbour's gradient the same
    ax.set_ylabel("correlation of neighbouring\ninput gradients (0: shattered)")
    ax.legend()
    style.title(fig, "Shattered gradients, at initialisation (Balduzzi et al. 2017)")
    return fig if path is None else save(fig, path)


def section(r: dict, exp_dir: Path) -> str:
    """The report's section from OUT/analyses/gradients.json (r) and OUT/figures."""
    rows = [
        [f"{x['arch']}-{x['depth']}", f"{x['correlation']:.3f}", f"{x['correlation_std']:.3f}"]
        for x in r["shattering"]["rows"]
    ]
    return (
        "<h2>Gradient flow</h2>"
        + figure(exp_dir, "gradient_norms", "per-layer gradient norms")
        + figure(exp_dir, "shattering", "gradient correlation against depth")
        + table(["network at initialisation", "correlation of neighbouring input gradients", "std over lines"], rows)
        + f'<p class="note">Gradient norms: one batch of {esc(r["images"])} training images, cross-entropy, train-mode '
        f"BN. Shattering (Balduzzi et al. 2017): input gradients of the top logit at {esc(r['points'])} points on each "
        f"of {esc(r['lines'])} lines (each through its own image, along its own random direction); the mean and "
        "the standard deviation over the lines; BN in eval mode with statistics from real images.</p>"
    )
