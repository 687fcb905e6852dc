"""Loss landscape (Li et al. 2018): the loss along filter-normalised random directions.

A direction d has the shape of the weights and Gaussian entries; each filter of d (each output
unit of a conv or linear weight) is rescaled to the norm of the same filter of the weights, and
BN parameters and biases get a zero direction. The loss L(w + a d1 + b d2) is measured on a fixed
set of training images with BN in eval mode (the trained running statistics).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from reslab import style
from reslab.analysis.common import (
    add_run_args,
    caption,
    load_split,
    output_dir,
    progress_bar,
    write_result,
)
from reslab.errors import UserError
from reslab.evaluate import score
from reslab.options import number, positive_int
from reslab.page import count, esc, figure, table
from reslab.plots import Figure, save, styled
from reslab.schema import Count, Fraction, NonNegative, Numbers, OfRun, Precision, Record


def filter_normalized_direction(model: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    direction = {}
    for name, w in model.named_parameters():
        if w.dim() <= 1:
            direction[name] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator)
        w_norm = w.detach().flatten(1).norm(dim=1)
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        direction[name] = d * (w_norm / d_norm).view(-1, *([1] * (w.dim() - 1)))
    return direction


@torch.inference_mode()
def loss_at(model, x, y, batch_size=1000, precision="fp32") -> tuple[float, float]:
    """Mean cross-entropy and error of `model` (eval mode) on the normalised images x."""
    return score(model, x, y, None, None, precision, batch_size, channels_last=False)


@torch.inference_mode()
def surface(
    model, x, y, directions: list[dict], coords: list[list[float]], precision: str = "fp32", progress=None
) -> list[tuple[float, float]]:
    """(loss, error) at w + sum_i c_i d_i for each coordinate tuple c in `coords`; weights restored after."""
    params = dict(model.named_parameters())
    origin = {k: p.detach().clone() for k, p in params.items()}
    losses = []
    try:
        for c in coords:
            for k, p in params.items():
                p.copy_(origin[k] + sum(ci * d[k] for ci, d in zip(c, directions)))
            losses.append(loss_at(model, x, y, precision=precision))
            if progress:
                progress()
    finally:
        for k, p in params.items():
            p.copy_(origin[k])
    return losses


class Surface(OfRun):
    """The loss along one direction (line) and on a grid of two, centred at the trained weights."""

    axis: Numbers
    line: list[NonNegative]
    line_error: list[Fraction]
    grid: list[list[NonNegative]]
    local_minima: Count
    seconds: NonNegative

    def __post_init__(self):
        n = len(self.axis)
        if not n % 2 or len(self.grid) != n or any(len(row) != n for row in self.grid):
            raise ValueError("grid is not a square as wide as the axis, with a centre")


class Result(Record):
    """analyses/landscape.json."""

    images: Count
    resolution: Count
    span: NonNegative
    precision: Precision
    runs: list[Surface]


# ---------------------------------------------------------------------------------------------
# `reslab analyze landscape` (the parts every analysis has: analysis/__init__.py)

FIGURES = ["landscape"]  # under OUT/figures, each as .png and .svg
HELP = (
    "loss along filter-normalised random directions (Li et al. 2018), 1D and 2D, BN in eval mode, on a fixed "
    "subset of the training images"
)
SLOW = True


def add_args(p) -> None:
    add_run_args(p)
    p.add_argument("--resolution", type=positive_int, default=21, help="grid points per axis (default 21)")
    p.add_argument(
        "--span",
        type=number(0, strict=True, maximum=100),
        default=1.0,
        help="coordinates run from -span to span, in units of the weights' own filter norms (default %(default)s)",
    )
    p.add_argument("--images", type=positive_int, default=2000, help="training images (default 2000)")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast where the hardware runs it natively, else fp32 (default %(default)s)",
    )


def command(args) -> tuple[dict, Path]:
    out = output_dir(args.runs, args.out, "landscape")
    result = analyze(
        args.runs, out, args.resolution, args.span, args.images, args.precision, args.dataset, args.data_dir
    )
    return result, out


def summary(r: dict) -> list[str]:
    lines = []
    for run in r["runs"]:
        n = len(run["axis"])
        lines.append(
            f"{run['label']}: loss at the centre {run['grid'][n // 2][n // 2]:.3f}, {run['local_minima']} local "
            f"{'minimum' if run['local_minima'] == 1 else 'minima'} on the {n}x{n} grid"
        )
    return lines


def analyze(
    run_dirs: list[Path],
    out=None,
    resolution=21,
    span=1.0,
    images=2000,
    precision="auto",
    dataset=None,
    data_dir=None,
    seed=0,
) -> dict:
    from reslab.accel import resolve_precision

    if not (resolution >= 3 and resolution % 2):
        raise UserError(
            f"--resolution must be odd and 3 or more, so that the grid has its centre at the trained weights, "
            f"got {resolution}."
        )
    if not (math.isfinite(span) and span > 0):
        raise UserError(f"--span must be a positive finite number, got {span}.")
    precision = resolve_precision(precision, torch.device("cpu"))
    axis = [span * (2 * i / (resolution - 1) - 1) for i in range(resolution)]
    results = []
    for d in run_dirs:
        run = load_split(d, "train", images, dataset, data_dir, seed=seed)
        model = run.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = run.x.contiguous(memory_format=torch.channels_last)
        g = torch.Generator().manual_seed(seed)
        d1 = filter_normalized_direction(model, g)
        d2 = filter_normalized_direction(model, g)
        t0 = time.perf_counter()
        coords = [[a, b] for b in axis for a in axis]
        bar = progress_bar(len(axis) + len(coords), f"landscape {run.label}")
        line = surface(model, x, run.y, [d1], [[a] for a in axis], precision, bar.update)
        grid = surface(model, x, run.y, [d1, d2], coords, precision, bar.update)
        bar.close()
        logging.getLogger(__name__).info(
            f"{run.label}: {len(coords) + len(axis)} evaluations on {len(run.y)} images in "
            f"{time.perf_counter() - t0:.0f} s"
        )
        results.append(
            {
                "run": run.dir.name,
                "label": run.label,
                "arch": run.arch,
                "depth": run.depth,
                "axis": axis,
                "line": [v[0] for v in line],
                "line_error": [v[1] for v in line],
                "grid": [[grid[j * resolution + i][0] for i in range(resolution)] for j in range(resolution)],
                "seconds": time.perf_counter() - t0,
            }
        )
        results[-1]["local_minima"] = local_minima(results[-1]["grid"])
    out = output_dir(run_dirs, out, "landscape")
    result = {"images": images, "resolution": resolution, "span": span, "precision": precision, "runs": results}
    write_result(out, "landscape", result)
    plot(results, out / "figures" / "landscape", caption(run_dirs, len(run.y), "training"))
    return result


def local_minima(grid: list[list[float]]) -> int:
    """Interior grid points lower than all 8 neighbours: 1 for a bowl, many for a chaotic surface."""
    n = len(grid)
    count = 0
    for j in range(1, n - 1):
        for i in range(1, n - 1):
            v = grid[j][i]
            if all(v < grid[j + dj][i + di] for dj in (-1, 0, 1) for di in (-1, 0, 1) if dj or di):
                count += 1
    return count


@styled
def plot(results: list[dict], path: Path | None = None, title: str = "") -> Figure | list[Path]:
    """1D slices (one shared y range), 2D contours and surfaces (one shared colour scale, with a
    colourbar), one column per run. The loss spans orders of magnitude between the trained
    point and the grid's edges, so it is drawn on a log scale."""
    import numpy as np
    from matplotlib.colors import Normalize
    from matplotlib.ticker import FuncFormatter

    n = len(results)
    fig = Figure(figsize=(6.2 * n + 1.2, 15), layout="constrained")
    grids = [np.log10(np.maximum(np.array(r["grid"]), 1e-6)) for r in results]
    low, high = float(min(g.min() for g in grids)), float(max(g.max() for g in grids))
    norm = Normalize(low, high)
    levels = np.linspace(low, high, 25)
    lines = [v for r in results for v in r["line"]]
    axes1: list = []
    axes2: list = []
    axes3: list = []
    for i, (r, grid) in enumerate(zip(results, grids)):
        a = np.array(list(r["axis"]))
        ax1 = fig.add_subplot(3, n, i + 1, sharey=axes1[0] if axes1 else None)
        ax1.plot(r["axis"], r["line"], **{**style.net(r["arch"], r["depth"]), "marker": None})
        ax1.set_yscale("log")
        ax1.set_ylim(min(lines) / 1.5, max(lines) * 1.5)
        ax1.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax1.set_title(f"{r['label']}: 1D slice")
        ax1.set_xlabel("α")
        ax1.set_ylabel("training loss")
        ax2 = fig.add_subplot(3, n, n + i + 1)
        cs = ax2.contour(a, a, grid, levels=levels, cmap="viridis", norm=norm)
        ax2.clabel(cs, list(cs.levels)[::4], fontsize=8, fmt=lambda v: f"{10**v:.3g}", inline_spacing=2)
        ax2.set_title(f"{r['label']}: contours of the loss")
        ax2.set_xlabel("α (direction 1)")
        ax2.set_ylabel("β (direction 2)")
        ax2.set_aspect("equal")
        ax3 = fig.add_subplot(3, n, 2 * n + i + 1, projection="3d")
        xx, yy = np.meshgrid(a, a)
        ax3.plot_surface(xx, yy, grid, cmap="viridis", norm=norm, linewidth=0, antialiased=True)
        ax3.set_zlim(low, high)
        ax3.set_title(f"{r['label']}: surface")
        ax3.set_zlabel("log10 loss")
        axes1.append(ax1)
        axes2.append(ax2)
        axes3.append(ax3)
    from matplotlib.cm import ScalarMappable

    scale = ScalarMappable(norm=norm, cmap="viridis")
    for row in (axes2, axes3):
        fig.colorbar(scale, ax=row, label="log10 training loss", shrink=0.85)
    style.title(
        fig, "Loss landscape along two filter-normalised directions (Li et al. 2018)" + (f"\n{title}" if title else "")
    )
    return fig if path is None else save(fig, path)


def section(r: dict, exp_dir: Path) -> str:
    """The report's section from OUT/analyses/landscape.json (r) and OUT/figures."""
    rows = [
        [
            x["label"],
            f"{x['grid'][len(x['axis']) // 2][len(x['axis']) // 2]:.3f}",  # the centre: --resolution is odd
            f"{min(min(g) for g in x['grid']):.3f}",
            f"{max(max(g) for g in x['grid']):.3f}",
            str(x["local_minima"]),
        ]
        for x in r["runs"]
    ]
    return (
        "<h2>Loss landscape (Li et al. 2018)</h2>"
        + figure(exp_dir, "landscape", "loss landscape")
        + table(["network", "loss at the trained weights", "lowest", "highest", "local minima on the grid"], rows)
        + f'<p class="note">Filter-normalised random directions, BN parameters fixed, BN in eval mode; '
        f"{esc(r['resolution'])}x{esc(r['resolution'])} grid over [-{esc(r['span'])}, {esc(r['span'])}]², "
        f"{count(r['images'])} "
        "training images.</p>"
    )
