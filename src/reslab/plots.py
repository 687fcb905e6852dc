"""The experiment figures (Fig. 1 / 6, Table 6 drawn, how fast nets train), one function each,
written as PNG and SVG or returned as a matplotlib Figure, in reslab's one visual grammar
(style.py): hue is the architecture, lightness the depth, dashed training error, solid test
error."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from reslab import style
from reslab.style import REFERENCE, net, save, split_handles, styled, subplots

__all__ = ["error_curves", "error_vs_depth", "reach_vs_depth", "figure_title", "save", "styled", "subplots", "Figure"]


def registered(arch: str):
    """The architecture's entry in models.ARCHS, or None for a name it does not hold."""
    from reslab.models import ARCHS

    return ARCHS.get(arch)


def panel_title(arch: str) -> str:
    return a.panel if (a := registered(arch)) else arch


def drawn_archs(present) -> list[str]:
    """The architectures among `present`, in the registry's order (unknown ones last)."""
    from reslab.models import ARCHS

    return sorted(set(present), key=lambda a: (list(ARCHS).index(a) if a in ARCHS else len(ARCHS), a))


def curve_band(metric_runs: list[list[dict]], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Iterations, the mean, the lowest and the highest of `key` (in %) over the runs, at the
    iterations all of them evaluated."""
    by_it: dict[float, list[float]] = {}
    for rows in metric_runs:
        for r in rows:
            if r.get(key) is not None:
                by_it.setdefault(r["iteration"], []).append(100 * r[key])
    its = sorted(i for i, v in by_it.items() if len(v) == len(metric_runs))
    return (
        its,
        [sum(by_it[i]) / len(by_it[i]) for i in its],
        [min(by_it[i]) for i in its],
        [max(by_it[i]) for i in its],
    )


def draw_split(ax, metric_runs: list[list[dict]], arch: str, depth: int, split: str, label: str | None) -> list:
    """One net's training or test error curve: the mean over seeds with markers at the evaluated
    points, and the seeds' range as a band."""
    its, mean, low, high = curve_band(metric_runs, f"{split}_error")
    kw = net(arch, depth, split)
    ax.plot(its, mean, label=label, clip_on=False, markevery=max(1, len(its) // 25), **{**kw, "ms": 4})
    if len(metric_runs) > 1:
        ax.fill_between(its, low, high, color=kw["color"], alpha=0.15, lw=0)
    return mean


@styled
def error_curves(all_runs: list, path: Path | None = None, title: str = "") -> Figure | list[Path]:
    """Figure 1 / Figure 6: one panel per architecture, error (%) against iterations, training
    dashed and test solid, a shade per depth, the seeds' range as a band, dotted lines at the lr
    drops. Where some net trains below 10%, a second row shows training error on a log axis."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    groups: dict[str, dict[int, list[list[dict]]]] = {}
    drops: dict[str, list] = {}
    for r in all_runs:
        if r.metrics:
            groups.setdefault(r.arch, {}).setdefault(r.depth, []).append(r.metrics)
            drops.setdefault(r.arch, r.config.resolved.milestones)
    archs = drawn_archs(groups) or [""]  # "": no run has metrics yet, one empty panel
    low_end = min([100 * m[-1]["train_error"] for g in groups.values() for ms in g.values() for m in ms] + [100])
    rows = 2 if low_end < 10 else 1
    fig, axes = subplots(
        rows,
        len(archs),
        figsize=(6.4 * len(archs), 4.4 + 3.2 * (rows - 1)),
        sharey="row",
        squeeze=False,
        layout="constrained",
    )
    top = 1.0
    for col, arch in enumerate(archs):
        ax = axes[0][col]
        for depth in sorted(groups.get(arch, {})):
            n = len(groups[arch][depth])
            label = f"{style_label(arch, depth)}" + (f" ({n} seeds)" if n > 1 else "")
            train = draw_split(ax, groups[arch][depth], arch, depth, "train", label)
            test = draw_split(ax, groups[arch][depth], arch, depth, "test", None)
            if rows == 2:
                draw_split(axes[1][col], groups[arch][depth], arch, depth, "train", None)
            top = max([top, *train, *test])
        for a in axes[:, col]:
            for i, m in enumerate(drops.get(arch, [])):
                a.axvline(m, label="lr ÷ 10" if a is ax and i == 0 else None, **REFERENCE)
        ax.set_title(panel_title(arch) if arch else "")
        axes[-1][col].set_xlabel("iterations")
        handles, _ = ax.get_legend_handles_labels()
        axes[-1][col].legend(handles=handles + split_handles(), fontsize=10, **BELOW)
    style.error_axis(axes[0][0], top)
    if rows == 2:
        low = axes[1][0]
        low.set_yscale("symlog", linthresh=1.0, linscale=0.5)
        low.set_ylim(0, 100)
        low.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 50, not 5x10^1
        low.yaxis.set_minor_formatter(NullFormatter())
        low.set_ylabel("training error (%)\n(log scale above 1%)")
    style.title(fig, title)
    return fig if path is None else save(fig, path)


def style_label(arch: str, depth: int) -> str:
    """A net's name as tables give it: plain-20, ResNet-20."""
    from reslab.models import display

    return display(arch, depth)


def figure_title(all_runs: list) -> str:
    """What every figure of an experiment says it shows: dataset, image size, budget and seeds."""
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
    """Table 6 drawn (the shape of Fig. 6): final error against depth, one hue per architecture,
    training dashed and test solid, each depth's point in its shade, the seeds' spread (one
    standard deviation) as a band. Two depths are drawn as points: a line would claim a shape."""
    fig, ax = subplots(figsize=(7.4, 5.0), layout="constrained")
    top = 1.0
    for arch in drawn_archs(r["arch"] for r in summary if r["runs"]):
        rows = sorted((r for r in summary if r["arch"] == arch and r["runs"]), key=lambda r: r["depth"])
        depths = [r["depth"] for r in rows]
        for split in ("train", "test"):
            mean = [100 * r[f"{split}_error_mean"] for r in rows]
            std = [100 * (r[f"{split}_error_std"] or 0) for r in rows]
            s = style.SPLITS[split]
            if len(depths) > 2:
                ax.plot(depths, mean, color=style.colour(arch), ls=s["ls"], lw=s["lw"], zorder=2)
            if any(std):
                style.band(ax, depths, mean, std, style.colour(arch), alpha=0.12)
            span = 0.04 * (max(depths) - min(depths) or 10)  # a short stroke in the split's dashes at each point
            for r, m in zip(rows, mean):
                kw = net(arch, r["depth"], split)
                stroke = {"color": kw["color"], "ls": kw["ls"], "lw": 3.2, "clip_on": False, "zorder": 3}
                ax.plot([r["depth"] - span, r["depth"] + span], [m, m], **stroke)
                dot = {"color": kw["color"], "marker": kw["marker"], "ms": 8, "mec": "white", "clip_on": False}
                ax.plot([r["depth"]], [m], ls="none", zorder=4, **dot)
            top = max([top, *mean])
    ax.set_xlabel("depth (layers)")
    ax.set_xticks(sorted({r["depth"] for r in summary}))
    style.error_axis(ax, top, "final error (%)")
    ax.legend(handles=arch_handles(summary) + split_handles(), fontsize=10, **BELOW)
    style.title(fig, "Error against depth (paper, Table 6)" + (f"\n{title}" if title else ""))
    return fig if path is None else save(fig, path)


# A legend under the axes, where it hides no point.
BELOW = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "ncol": 2}


def arch_handles(summary: list[dict]) -> list:
    """Legend entries naming each architecture's hue."""
    from matplotlib.patches import Patch

    return [Patch(color=style.colour(a), label=panel_title(a)) for a in drawn_archs(r["arch"] for r in summary)]


@styled
def reach_vs_depth(
    summary: list[dict], path: Path | None = None, title: str = "", budget: int | None = None, every: int | None = None
) -> Figure | list[Path]:
    """Iterations until the training error first reaches the summary's threshold, against
    depth. A net that never reaches it within the budget is marked in a row of its own above
    the axis, labelled "never"; the budget is a dotted line."""
    fig, ax = subplots(figsize=(7.4, 4.8), layout="constrained")
    threshold = summary[0]["reach_threshold"] if summary else 0
    done = [r for r in summary if r["runs"]]
    ceiling = budget or max([r["iterations_to_reach"] or 0 for r in done] + [1])
    never_y = ceiling * 1.12
    for arch in drawn_archs(r["arch"] for r in done):
        rows = sorted((r for r in done if r["arch"] == arch), key=lambda r: r["depth"])
        reached = [r for r in rows if r["iterations_to_reach"] is not None]
        if len(reached) > 2:
            ax.plot(
                [r["depth"] for r in reached],
                [r["iterations_to_reach"] for r in reached],
                color=style.colour(arch),
                lw=2.2,
                zorder=2,
            )
        for r in rows:
            y = r["iterations_to_reach"] if r["iterations_to_reach"] is not None else never_y
            kw = {k: v for k, v in net(arch, r["depth"]).items() if k in ("color", "marker")}
            ax.plot([r["depth"]], [y], ls="none", ms=9, mec="white", clip_on=False, zorder=3, **kw)
    if budget:
        ax.axhline(budget, **REFERENCE, label=f"budget: {budget:,} iterations")
    ax.set_ylim(0, ceiling * 1.04)
    if any(r["iterations_to_reach"] is None for r in done):
        ax.annotate(
            "never",
            (0, never_y),
            xycoords=("axes fraction", "data"),
            xytext=(-6, 0),
            textcoords="offset points",
            ha="right",
            va="center",
            annotation_clip=False,
        )
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel(
        f"iterations to {100 * threshold:g}% training error" + (f"\n(evaluated every {every:,})" if every else "")
    )
    ax.set_xticks(sorted({r["depth"] for r in summary}))
    handles = arch_handles(done)
    if budget:
        handles += [ax.get_legend_handles_labels()[0][-1]]
    ax.legend(handles=handles, fontsize=10, **BELOW)
    style.title(fig, "How fast they train" + (f"\n{title}" if title else ""))
    return fig if path is None else save(fig, path)
