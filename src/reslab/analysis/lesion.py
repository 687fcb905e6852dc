"""Lesion study (Veit, Wilber and Belongie 2016): delete residual blocks at test time.

Deleting a residual block keeps its shortcut: a post-activation block becomes relu(shortcut(x))
(x itself when the shortcut is the identity), a pre-activation one shortcut(x). A plain net has no
shortcut to keep: a deleted block passes its input on unchanged, which is possible only where the
block does not change the shape; the blocks that downsample cannot be removed at all.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

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
from reslab.evaluate import error_rate
from reslab.models import CifarNet
from reslab.options import positive_int
from reslab.page import count, esc, figure, table
from reslab.plots import Figure, save, styled, subplots
from reslab.schema import Count, Fraction, NonNegative, OfRun, Record
from reslab.summary import pct as pc


class Deleted(nn.Module):
    """What is left of a block once its residual branch (or, in a plain net, the block) is gone."""

    def __init__(self, block: Any, post_activation: bool):
        super().__init__()
        self.shortcut = block.shortcut if block.shortcut is not None else nn.Identity()
        self.post_activation = post_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shortcut(x)
        return F.relu(out) if self.post_activation else out


def removable(block: Any) -> bool:
    """A plain block can be skipped only when input and output shapes agree."""
    if getattr(block, "shortcut", None) is not None:
        return True
    return block.conv1.stride == (1, 1) and block.conv1.in_channels == block.conv2.out_channels


def delete_blocks(model: CifarNet, indices: set[int]) -> CifarNet:
    """A copy of `model` with the blocks at `indices` (0-based, across stages) deleted."""
    lesioned = copy.deepcopy(model)
    position = 0
    for stage in (lesioned.layer1, lesioned.layer2, lesioned.layer3):
        for j in range(len(stage)):
            if position in indices:
                stage[j] = Deleted(stage[j], post_activation=not lesioned.preact)
            position += 1
    return lesioned.eval()


def single_deletions(model: CifarNet, x: torch.Tensor, y: torch.Tensor, progress=None) -> list[dict]:
    """Error after deleting each block alone (None where a plain block cannot be removed)."""
    out = []
    for i, block in enumerate(model.blocks()):
        downsampling = block.conv1.stride != (1, 1) or block.conv1.in_channels != _out_channels(block)
        error = error_rate(delete_blocks(model, {i}), x, y) if removable(block) else None
        out.append({"block": i + 1, "downsampling": downsampling, "error": error})
        if progress:
            progress()
    return out


def _out_channels(block: Any) -> int:
    return (block.conv3 if hasattr(block, "conv3") else block.conv2).out_channels


def random_deletions(
    model: CifarNet, x: torch.Tensor, y: torch.Tensor, ks: list[int], samples: int = 10, seed: int = 0, progress=None
) -> list[dict]:
    """Mean and std of the error after deleting k random removable blocks, for each k."""
    g = torch.Generator().manual_seed(seed)
    candidates = [i for i, b in enumerate(model.blocks()) if removable(b)]
    out = []
    for k in ks:
        if k > len(candidates):
            break
        errors = []
        for _ in range(samples):
            pick = torch.randperm(len(candidates), generator=g)[:k].tolist()
            errors.append(error_rate(delete_blocks(model, {candidates[p] for p in pick}), x, y))
            if progress:
                progress()
        mean = sum(errors) / len(errors)
        std = (sum((e - mean) ** 2 for e in errors) / max(1, len(errors) - 1)) ** 0.5
        out.append({"k": k, "error_mean": mean, "error_std": std, "samples": len(errors)})
    return out


class Deletion(Record):
    """The error with one block deleted (None: a plain block that changes the shape cannot be)."""

    block: Count
    downsampling: bool
    error: Fraction | None


class RandomDeletions(Record):
    k: Count
    error_mean: Fraction
    error_std: NonNegative
    samples: Count


class LesionRun(OfRun):
    baseline: Fraction
    blocks: Count
    single: list[Deletion]
    random: list[RandomDeletions]


class Result(Record):
    """analyses/lesion.json."""

    images: Count
    samples: Count
    runs: list[LesionRun]


# ---------------------------------------------------------------------------------------------
# `reslab analyze lesion` (the parts every analysis has: analysis/__init__.py)

FIGURES = ["lesion"]  # under OUT/figures, each as .png and .svg
HELP = (
    "delete each residual block in turn at test time (keeping its shortcut), then k random blocks (Veit et al. "
    "2016); in plain nets a deleted block passes its input on, where the shape allows"
)
SLOW = True


def add_args(p) -> None:
    add_run_args(p)
    p.add_argument("--limit", type=positive_int, help="use at most N images (default: all)")
    p.add_argument("--samples", type=positive_int, default=10, help="random draws per k (default 10)")


def command(args) -> tuple[dict, Path]:
    out = output_dir(args.runs, args.out, "lesion")
    return analyze(args.runs, out, args.limit, args.samples, args.dataset, args.data_dir), out


def summary(r: dict) -> list[str]:
    lines = []
    for run in r["runs"]:
        single = [s["error"] for s in run["single"] if s["error"] is not None]
        lines.append(
            f"{run['label']}: test error {run['baseline']:.1%}; deleting one block: "
            + (
                f"median {sorted(single)[len(single) // 2]:.1%}, worst {max(single):.1%}"
                if single
                else "no block can be deleted"
            )
        )
    return lines


def analyze(run_dirs: list[Path], out=None, limit=None, samples=10, dataset=None, data_dir=None) -> dict:
    results = []
    for d in run_dirs:
        run = load_split(d, "test", limit, dataset, data_dir)
        m = len(run.model.blocks())
        ks = list(range(1, m + 1)) if m <= 12 else sorted({1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, m // 2, m})
        deletable = sum(map(removable, run.model.blocks()))
        bar = progress_bar(m + samples * sum(k <= deletable for k in ks), f"lesion {run.label}")
        results.append(
            {
                "run": run.dir.name,
                "label": run.label,
                "arch": run.arch,
                "depth": run.depth,
                "baseline": error_rate(run.model, run.x, run.y),
                "blocks": m,
                "single": single_deletions(run.model, run.x, run.y, bar.update),
                "random": random_deletions(run.model, run.x, run.y, ks, samples, progress=bar.update),
            }
        )
        bar.close()
    out = output_dir(run_dirs, out, "lesion")
    result = {"images": len(run.y), "samples": samples, "runs": results}
    write_result(out, "lesion", result)
    plot(results, out / "figures" / "lesion", caption(run_dirs, len(run.y), "test"))
    return result


def deletable_note(r: dict) -> str:
    """Why a curve of k random deletions ends early: a plain block that changes the shape has
    no input to pass on, so it cannot be deleted."""
    can = sum(s["error"] is not None for s in r["single"])
    return f" (only {can} of its {r['blocks']} blocks can be deleted)" if can < r["blocks"] else ""


@styled
def plot(results: list[dict], path: Path | None = None, title: str = "") -> Figure | list[Path]:
    fig, (left, right) = subplots(1, 2, figsize=(13, 5.0), layout="constrained")
    for r in sorted(results, key=lambda r: -r["depth"]):
        kw = style.net(r["arch"], r["depth"])
        single = [s for s in r["single"] if s["error"] is not None]
        left.plot(
            [s["block"] for s in single],
            [100 * s["error"] for s in single],
            label=r["label"],
            **{**kw, "ms": 4},
        )
        down = [s for s in single if s["downsampling"]]
        left.scatter(
            [s["block"] for s in down],
            [100 * s["error"] for s in down],
            s=90,
            facecolors="none",
            edgecolors="black",
            zorder=5,
        )
        if r["random"]:
            right.errorbar(
                [k["k"] for k in r["random"]],
                [100 * k["error_mean"] for k in r["random"]],
                yerr=[100 * k["error_std"] for k in r["random"]],
                capsize=3,
                label=r["label"] + deletable_note(r),
                **kw,
            )
        left.axhline(100 * r["baseline"], **{**style.REFERENCE, "color": kw["color"]})
    from matplotlib.lines import Line2D

    left.set_xlabel("deleted block (circled: downsampling)")
    left.set_title("deleting one block")
    right.set_xlabel("number of random blocks deleted")
    right.set_title("deleting k blocks")
    top = max([100 * s["error"] for r in results for s in r["single"] if s["error"] is not None] + [1])
    for ax in (left, right):
        style.integer_axis(ax)
        style.error_axis(ax, top, "test error (%)")
    intact = Line2D([], [], **style.REFERENCE, label="intact net (dotted, in its colour)")
    left.legend(handles=left.get_legend_handles_labels()[0] + [intact], fontsize=10)
    right.legend(fontsize=10)
    style.title(fig, "Lesions: blocks deleted at test time (Veit et al. 2016)" + (f"\n{title}" if title else ""))
    return fig if path is None else save(fig, path)


def section(r: dict, exp_dir: Path) -> str:
    """The report's section from OUT/analyses/lesion.json (r) and OUT/figures."""
    rows = []
    for run in r["runs"]:
        non_down = [s["error"] for s in run["single"] if s["error"] is not None and not s["downsampling"]]
        down = [s["error"] for s in run["single"] if s["error"] is not None and s["downsampling"]]
        fixed = sum(s["error"] is None for s in run["single"])
        rows.append(
            [
                run["label"],
                pc(run["baseline"]),
                pc(sorted(non_down)[len(non_down) // 2]) if non_down else "-",
                pc(max(non_down)) if non_down else "-",
                pc(max(down)) if down else "-",
                f"{fixed} (shape changes)" if fixed else "0",
            ]
        )
    return (
        "<h2>Lesion study (Veit et al. 2016)</h2>"
        + figure(exp_dir, "lesion", "lesion study")
        + table(
            [
                "network",
                "test err %",
                "delete one block: median %",
                "worst %",
                "worst downsampling %",
                "blocks that cannot be deleted",
            ],
            rows,
        )
        + f'<p class="note">{count(r["images"])} test images. A deleted residual block keeps its shortcut; a deleted '
        "plain block passes its input on (impossible where it changes the shape). Random deletions: "
        f"{esc(r['samples'])} draws per k.</p>"
    )
