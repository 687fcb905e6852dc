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
    extra = ["#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31"]
    return extra[depth % len(extra)]


def save(fig, path: Path) -> list[Path]:
    """Write `path` as .png and .svg; returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in (".png", ".svg"):
        p = path.with_suffix(ext)
        fig.savefig(p, dpi=110, bbox_inches="tight")
        out.append(p)
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


def error_curves(all_runs: list[dict], path: Path, title: str = "") -> list[Path]:
    """Figure 1 / Figure 6: one panel per architecture, error (%) against iterations."""
    groups: dict[str, dict[int, list[list[dict]]]] = {}
    for r in all_runs:
        if r["metrics"]:
            m = r["config"]["model"]
            groups.setdefault(m["arch"], {}).setdefault(m["depth"], []).append(r["metrics"])
    archs = [a for a in PANEL_TITLES if a in groups]
    fig, axes = plt.subplots(1, max(1, len(archs)), figsize=(6.4 * max(1, len(archs)), 4.8), sharey=True, squeeze=False)
    top = 0.0
    for ax, arch in zip(axes[0], archs):
        for depth in sorted(groups[arch]):
            colour = depth_colour(depth)
            n = len(groups[arch][depth])
            label = f"{arch}-{depth}" + (f" (mean of {n})" if n > 1 else "")
            its, train = mean_curve(groups[arch][depth], "train_error")
            ax.plot(its, train, "--", color=colour, lw=1.2)
            its, test = mean_curve(groups[arch][depth], "test_error")
            ax.plot(its, test, "-", color=colour, lw=2.4, label=label)
            top = max([top, *train, *test])
        ax.set_title(PANEL_TITLES[arch])
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", frameon=False)
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].set_ylim(0, min(100, top * 1.05 + 1))
    fig.text(0.5, -0.04, "dashed: training error    solid: test error", ha="center", fontsize=12)
    if title:
        fig.suptitle(title, y=1.02)
    return save(fig, path)
