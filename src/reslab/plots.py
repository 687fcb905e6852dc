"""Figures, one function each, written as PNG and SVG. Each draws into a matplotlib Figure of its
own, in its own style (rc_context): importing reslab or drawing a figure changes neither pyplot's
backend nor its global settings, so a notebook's own plots stay as they were.

Conventions (as in the paper's Fig. 6): error in % against iterations, training error thin and
dashed, test error bold and solid, one colour per depth, the same colour for a depth in every
figure.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

DEPTH_COLOURS = {
    20: "#1f77b4",
    32: "#2ca02c",
    44: "#ff7f0e",
    56: "#d62728",
    110: "#9467bd",
    164: "#8c564b",
    1202: "#e377c2",
}


def registered(arch: str):
    """The architecture's entry in models.ARCHS, or None for a name it does not hold."""
    from reslab.models import ARCHS

    return ARCHS.get(arch)


def panel_title(arch: str) -> str:
    return a.panel if (a := registered(arch)) else arch


def arch_colour(arch: str) -> str:
    return a.colour if (a := registered(arch)) else "#7f7f7f"


def arch_style(arch: str) -> str:
    """Plain nets dashed, residual nets solid (the paper's Fig. 6 convention)."""
    a = registered(arch)
    return "-" if a is None or a.residual else "--"


def drawn_archs(present) -> list[str]:
    """The architectures among `present`, in the registry's order (unknown ones last)."""
    from reslab.models import ARCHS

    return sorted(set(present), key=lambda a: (list(ARCHS).index(a) if a in ARCHS else len(ARCHS), a))


STYLE = {"font.size": 13, "axes.titlesize": 15, "axes.labelsize": 14, "legend.fontsize": 11, "svg.fonttype": "none"}


def styled(draw):
    """Draw (and save) a figure in reslab's style, leaving matplotlib's global settings alone."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def subplots(nrows: int = 1, ncols: int = 1, figsize=None, **kwargs):
    """A Figure of its own (not pyplot's) and its axes, like plt.subplots."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def depth_colour(depth: int) -> str:
    if depth in DEPTH_COLOURS:
        return DEPTH_COLOURS[depth]
    # Other depths: neighbouring depths of the same family (6n+2, 9n+2) get different colours.
    extra = ["#17becf", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#e377c2"]
    return extra[(depth // 6) % len(extra)]


def save(fig, path: Path) -> list[Path]:
    """Write `path` as .png and .svg; returns both paths."""
    import io

    from reslab import files
    from reslab.files import atomic_write_bytes

    path = Path(path)
    out = []
    files.own_folder(path.parent)  # figures/ as a link would send the files elsewhere
    for ext in (".png", ".svg"):
        p = path.with_suffix(ext)
        buf = io.BytesIO()
        fig.savefig(buf, format=ext[1:], dpi=110, bbox_inches="tight")
        atomic_write_bytes(p, buf.getvalue())  # a full disk leaves the old figure, never half of one
        out.append(p)
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


# The lower panel's axis is linear up to this error (%) and logarithmic above: 0% is drawn at 0,
# and the differences near 0% that the verdicts rest on stay visible.
LINEAR_BELOW = 1.0


@styled
def error_curves(all_runs: list, path: Path | None = None, title: str = "") -> Figure | list[Path]:
    """Figure 1 / Figure 6: one column per architecture. Top: error (%) against iterations,
    training dashed, test solid, dotted lines at the lr drops. Bottom: training error alone on a
    log axis, where the differences near 0% that the verdicts rest on can be seen."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, NullFormatter

    groups: dict[str, dict[int, list[list[dict]]]] = {}
    drops: dict[str, list] = {}
    for r in all_runs:
        if r.metrics:
            groups.setdefault(r.arch, {}).setdefault(r.depth, []).append(r.metrics)
            drops.setdefault(r.arch, r.config.resolved.milestones)
    archs = drawn_archs(groups) or [""]  # "": no run has metrics yet, one empty panel
    fig, axes = subplots(
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
            low.plot(its, train, "--", color=colour, lw=1.6, label=label)
            its, test = mean_curve(groups[arch][depth], "test_error")
            ax.plot(its, test, "-", color=colour, lw=2.4, label=label)
            top = max([top, *train, *test])
        for a in (ax, low):
            for i, m in enumerate(drops.get(arch, [])):
                a.axvline(m, color="#5b6475", ls=":", lw=1.2, label="lr ÷ 10" if a is ax and i == 0 else None)
            a.grid(alpha=0.3)
        ax.set_title(panel_title(arch) if arch else "")
        low.set_xlabel("iterations")
        low.set_yscale("symlog", linthresh=LINEAR_BELOW, linscale=0.5)
        handles, _ = ax.get_legend_handles_labels()
        styles = [
            Line2D([], [], color="#333", ls="--", lw=1.2, label="training error"),
            Line2D([], [], color="#333", ls="-", lw=2.4, label="test error"),
        ]
        ax.legend(handles=handles + styles, loc="best", framealpha=0.85, edgecolor="none")
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].set_ylim(0, min(100, top * 1.05 + 1))
    # Tick labels as plain numbers (50, not 5x10^1).
    axes[1][0].set_ylim(0, 100)
    axes[1][0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[1][0].yaxis.set_minor_formatter(NullFormatter())
    axes[1][0].set_ylabel(f"training error (%)\n(log scale above {LINEAR_BELOW:g}%)")
    if title:
        fig.suptitle(title, y=1.02)
    fig.tight_layout()
    return fig if path is None else save(fig, path)


def run_style(arch: str, depth: int) -> dict:
    """Colour by depth; plain nets dashed, residual nets solid."""
    return {"color": depth_colour(depth), "ls": arch_style(arch), "lw": 2.0}


def figure_title(all_runs: list) -> str:
    """What every figure of an experiment says it shows: dataset, budget and seeds."""
    done = [r for r in all_runs if r.metrics]
    if not done:
        return ""
    first = done[0].config
    c, h, w = first.data.image_shape
    iterations = sorted({int(r.final["iteration"]) for r in done})
    seeds = sorted({r.seed for r in done})
    budget = f"{iterations[-1]:,} iterations" if len(iterations) == 1 else f"up to {iterations[-1]:,} iterations"
    kind, _, where = first.dataset.partition(":")  # imagefolder:PATH is named by its folder
    name = f"{kind}: {Path(where).name}" if where else kind
    return (
        f"{name} ({h}x{w}), {first.data.train_size:,} training images, {budget}, "
        f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    )


@styled
def error_vs_depth(summary: list[dict], path: Path | None = None, title: str = "") -> Figure | list[Path]:
    """Table 6 drawn: final error against depth, plain and residual side by side, training error
    dashed and test error solid, bars for the seeds' standard deviation."""
    fig, ax = subplots(figsize=(7.2, 5.0))
    archs = drawn_archs(r["arch"] for r in summary if r["runs"])
    for arch in archs:
        rows = sorted((r for r in summary if r["arch"] == arch and r["runs"]), key=lambda r: r["depth"])
        depths = [r["depth"] for r in rows]
        for split, ls, lw, what in (("train", "--", 1.6, "training"), ("test", "-", 2.6, "test")):
            ax.errorbar(
                depths,
                [100 * r[f"{split}_error_mean"] for r in rows],
                yerr=[100 * (r[f"{split}_error_std"] or 0) for r in rows],
                ls=ls, lw=lw, marker="o", capsize=4, color=arch_colour(arch),
                label=f"{panel_title(arch)}, {what} error",
            )  # fmt: skip
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("final error (%)")
    ax.set_xticks(sorted({r["depth"] for r in summary}))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(framealpha=0.85, edgecolor="none", fontsize=10)
    ax.set_title("Error against depth (paper, Table 6)" + (f"\n{title}" if title else ""), fontsize=12)
    fig.tight_layout()
    return fig if path is None else save(fig, path)


@styled
def reach_vs_depth(summary: list[dict], path: Path | None = None, title: str = "") -> Figure | list[Path]:
    """Iterations until the training error first reaches the summary's threshold, against
    depth; a net that never reaches it is drawn as a hollow marker at the top, labelled."""
    fig, ax = subplots(figsize=(7.2, 4.6))
    threshold = summary[0]["reach_threshold"] if summary else 0
    done = [r for r in summary if r["runs"]]
    ceiling = max([r["iterations_to_reach"] or 0 for r in done] + [1]) * 1.15
    for arch in drawn_archs(r["arch"] for r in done):
        rows = sorted((r for r in done if r["arch"] == arch), key=lambda r: r["depth"])
        reached = [r for r in rows if r["iterations_to_reach"] is not None]
        colour = arch_colour(arch)
        ax.plot([r["depth"] for r in reached], [r["iterations_to_reach"] for r in reached], marker="o", color=colour,
                lw=2.2, label=panel_title(arch), ls=arch_style(arch))  # fmt: skip
        for r in rows:
            if r["iterations_to_reach"] is None:
                ax.plot([r["depth"]], [ceiling], "o", mfc="white", color=colour, ms=9)
                ax.annotate("never", (r["depth"], ceiling), textcoords="offset points", xytext=(8, -4), color=colour)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel(f"iterations to {100 * threshold:g}% training error")
    ax.set_xticks(sorted({r["depth"] for r in summary}))
    ax.set_ylim(0, ceiling * 1.1)
    ax.grid(alpha=0.3)
    ax.legend(framealpha=0.85, edgecolor="none")
    ax.set_title("How fast they train" + (f"\n{title}" if title else ""), fontsize=12)
    fig.tight_layout()
    return fig if path is None else save(fig, path)
