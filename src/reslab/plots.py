"""Figures, one function each; matplotlib with the Agg backend, written as PNG and SVG.

Conventions (as in the paper's Fig. 6): error in % against iterations, training error thin and
dashed, test error bold and solid, one colour per depth, the same colour for a depth in every
figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEPTH_COLOURS = {
    20: "#1f77b4",
    32: "#2ca02c",
    44: "#ff7f0e",
    56: "#d62728",
    110: "#9467bd",
    164: "#8c564b",
    1202: "#e377c2",
}
PANEL_TITLES = {
    "plain": "plain networks",
    "resnet": "residual networks (ResNet)",
    "preact": "pre-activation ResNets",
    "preact-bottleneck": "pre-activation bottleneck ResNets",
}
plt.rcParams.update(
    {"font.size": 13, "axes.titlesize": 15, "axes.labelsize": 14, "legend.fontsize": 11, "svg.fonttype": "none"}
)


def depth_colour(depth: int) -> str:
    if depth in DEPTH_COLOURS:
        return DEPTH_COLOURS[depth]
    # Other depths: neighbouring depths of the same family (6n+2, 9n+2) get different colours.
    extra = ["#17becf", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#e377c2"]
    return extra[(depth // 6) % len(extra)]


def save(fig, path: Path) -> list[Path]:
    """Write `path` as .png and .svg; returns both paths."""
    import io

    from reslab.runs import atomic_write_bytes

    path = Path(path)
    out = []
    try:
        for ext in (".png", ".svg"):
            p = path.with_suffix(ext)
            buf = io.BytesIO()
            fig.savefig(buf, format=ext[1:], dpi=110, bbox_inches="tight")
            atomic_write_bytes(p, buf.getvalue())  # a full disk leaves the old figure, never half of one
            out.append(p)
    finally:
        plt.close(fig)
    return out


def mean_curve(metric_runs: list[list[dict]], key: str) -> tuple[list[float], list[float]]:
    """Mean of `key` over runs at the iterations all of them evaluated."""
    by_it: dict[float, list[float]] = {}
    for rows in metric_runs:
        for r in rows:
            if r.get(key) is not None:
                by_it.setdefault(r["iteration"], []).append(r[key])
    its = sorted(i for i, v in by_it.items() if len(v) == len(metric_runs))
    return its, [100 * sum(by_it[i]) / len(by_it[i]) for i in its]


# Training errors below this are drawn at it on the log panel (a log axis has no 0).
LOG_FLOOR = 0.1


def error_curves(all_runs: list[dict], path: Path, title: str = "") -> list[Path]:
    """Figure 1 / Figure 6: one column per architecture. Top: error (%) against iterations,
    training dashed, test solid, dotted lines at the lr drops. Bottom: training error alone on a
    log axis, where the differences near 0% that the verdicts rest on can be seen."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, NullFormatter

    groups: dict[str, dict[int, list[list[dict]]]] = {}
    drops: dict[str, list] = {}
    for r in all_runs:
        if r["metrics"]:
            m = r["config"]["model"]
            groups.setdefault(m["arch"], {}).setdefault(m["depth"], []).append(r["metrics"])
            drops.setdefault(m["arch"], r["config"]["resolved"].get("milestones") or [])
    archs = [a for a in PANEL_TITLES if a in groups] or [None]
    fig, axes = plt.subplots(
        2, len(archs), figsize=(6.4 * len(archs), 8.4), sharey="row", squeeze=False, height_ratios=[3, 2]
    )
    top = 0.0
    for col, arch in enumerate(archs):
        ax, low = axes[0][col], axes[1][col]
        for depth in sorted(groups.get(arch, {})):
            colour = depth_colour(depth)
            n = len(groups[arch][depth])
            label = f"{arch}-{depth}" + (f" (mean of {n})" if n > 1 else "")
            its, train = mean_curve(groups[arch][depth], "train_error")
            ax.plot(its, train, "--", color=colour, lw=1.2)
            low.plot(its, [max(v, LOG_FLOOR) for v in train], "--", color=colour, lw=1.6, label=label)
            its, test = mean_curve(groups[arch][depth], "test_error")
            ax.plot(its, test, "-", color=colour, lw=2.4, label=label)
            top = max([top, *train, *test])
        for a in (ax, low):
            for i, m in enumerate(drops.get(arch, [])):
                a.axvline(m, color="#5b6475", ls=":", lw=1.2, label="lr ÷ 10" if a is ax and i == 0 else None)
            a.grid(alpha=0.3)
        ax.set_title(PANEL_TITLES.get(arch, ""))
        low.set_xlabel("iterations")
        low.set_yscale("log")
        handles, _ = ax.get_legend_handles_labels()
        styles = [
            Line2D([], [], color="#333", ls="--", lw=1.2, label="training error"),
            Line2D([], [], color="#333", ls="-", lw=2.4, label="test error"),
        ]
        ax.legend(handles=handles + styles, loc="best", framealpha=0.85, edgecolor="none")
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].set_ylim(0, min(100, top * 1.05 + 1))
    # Tick labels as plain numbers (50, not 5x10^1); the in-between ones only within one decade.
    low_min, low_max = axes[1][0].get_ylim()
    axes[1][0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[1][0].yaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}") if low_max / low_min < 10 else NullFormatter()
    )
    axes[1][0].set_ylabel(f"training error (%), log\n(below {LOG_FLOOR:g}% drawn at {LOG_FLOOR:g}%)")
    if title:
        fig.suptitle(title, y=1.02)
    fig.tight_layout()
    return save(fig, path)


def run_style(arch: str, depth: int) -> dict:
    """Colour by depth; plain nets dashed, residual nets solid."""
    return {"color": depth_colour(depth), "ls": "--" if arch == "plain" else "-", "lw": 2.0}


def layer_responses(results: list[dict], path: Path, key: str = "std") -> list[Path]:
    """Figure 7: response std per 3x3 layer, in layer order (top) and sorted (bottom)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8.5))
    for r in sorted(results, key=lambda r: (r["arch"] != "plain", r["depth"])):
        values = [layer[key] for layer in r["layers"]]
        style = run_style(r["arch"], r["depth"])
        top.plot(range(1, len(values) + 1), values, label=r["label"], **style)
        bottom.plot(range(1, len(values) + 1), sorted(values, reverse=True), **style)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std of response")
        ax.grid(alpha=0.3)
    top.legend(frameon=False, ncol=3)
    fig.tight_layout()
    return save(fig, path)


def identity_learning(result: dict, path: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for kind, style in (
        ("plain", dict(color="#d62728", ls="--", marker="o")),
        ("residual", dict(color="#1f77b4", ls="-", marker="s")),
    ):
        rows = result[kind]
        ax.plot(
            [r["convs"] for r in rows],
            [max(r["error"], 1e-8) for r in rows],
            label=f"{kind} ({result['unit'][kind]})",
            lw=2,
            **style,
        )
    ax.set_yscale("log")
    ax.set_xticks([r["convs"] for r in result["plain"]])
    ax.set_xlabel("3x3 convolutions in the stack (2k plain layers, k residual blocks)")
    ax.set_ylabel("relative error ‖f(x) − x‖² / ‖x‖²")
    ax.set_title("learning the identity mapping")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False)
    return save(fig, path)


def lesion(results: list[dict], path: Path) -> list[Path]:
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    for r in results:
        style = run_style(r["arch"], r["depth"])
        single = [s for s in r["single"] if s["error"] is not None]
        left.plot(
            [s["block"] for s in single],
            [100 * s["error"] for s in single],
            marker="o",
            ms=4,
            label=r["label"],
            **style,
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
                label=r["label"],
                **style,
            )
        left.axhline(100 * r["baseline"], color=style["color"], lw=0.8, alpha=0.6)
    left.set_xlabel("deleted block (circled: downsampling)")
    left.set_ylabel("test error (%)")
    left.set_title("deleting one block")
    right.set_xlabel("number of random blocks deleted")
    right.set_ylabel("test error (%)")
    right.set_title("deleting k blocks")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    fig.tight_layout()
    return save(fig, path)


def gradient_norms(results: list[dict], path: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, when in zip(axes, ("init", "trained")):
        for r in results:
            values = r["norms"][when]
            ax.plot(range(1, len(values) + 1), values, label=r["label"], **run_style(r["arch"], r["depth"]))
        ax.set_yscale("log")
        ax.set_xlabel("3x3 conv layer")
        ax.set_title("at initialisation" if when == "init" else "after training")
        ax.grid(alpha=0.3, which="both")
        ax.legend(frameon=False)
    axes[0].set_ylabel("‖∂L/∂W‖")
    fig.tight_layout()
    return save(fig, path)


def shattering(result: dict, path: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for arch, colour, ls in (("plain", "#d62728", "--"), ("resnet", "#1f77b4", "-")):
        rows = [r for r in result["rows"] if r["arch"] == arch]
        if rows:
            ax.errorbar(
                [r["depth"] for r in rows],
                [r["correlation"] for r in rows],
                yerr=[r.get("correlation_std", 0) for r in rows],
                marker="o",
                color=colour,
                ls=ls,
                lw=2,
                capsize=4,
                label=f"{arch} (mean ± std over lines)",
            )
    ax.set_xlabel("depth")
    ax.set_ylabel("correlation of neighbouring input gradients")
    ax.set_title("shattered gradients (at initialisation)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return save(fig, path)


def landscape(results: list[dict], path: Path) -> list[Path]:
    """1D slices, 2D contours and surfaces, one column per run. The loss spans orders of
    magnitude between the trained point and the grid's edges, so it is drawn on a log scale."""
    import numpy as np

    n = len(results)
    fig = plt.figure(figsize=(6.2 * n, 15))
    for i, r in enumerate(results):
        a = np.array(r["axis"])
        grid = np.log10(np.maximum(np.array(r["grid"]), 1e-6))
        ax1 = fig.add_subplot(3, n, i + 1)
        ax1.plot(r["axis"], r["line"], color=depth_colour(r["depth"]), lw=2)
        ax1.set_yscale("log")
        ax1.set_title(f"{r['label']}: 1D slice")
        ax1.set_xlabel("α")
        ax1.set_ylabel("training loss")
        ax1.grid(alpha=0.3, which="both")
        ax2 = fig.add_subplot(3, n, n + i + 1)
        cs = ax2.contour(a, a, grid, levels=np.linspace(grid.min(), grid.max(), 25), cmap="viridis")
        ax2.clabel(cs, cs.levels[::4], fontsize=8, fmt=lambda v: f"{10**v:.3g}")
        ax2.set_title(f"{r['label']}: contours of the loss")
        ax2.set_xlabel("α (direction 1)")
        ax2.set_ylabel("β (direction 2)")
        ax3 = fig.add_subplot(3, n, 2 * n + i + 1, projection="3d")
        xx, yy = np.meshgrid(a, a)
        ax3.plot_surface(xx, yy, grid, cmap="viridis", linewidth=0, antialiased=True)
        ax3.set_title(f"{r['label']}: surface")
        ax3.set_zlabel("log10 loss")
    fig.tight_layout()
    return save(fig, path)
