"""One visual grammar for every figure reslab draws, so a report never gives a colour or a line
two meanings:

- **hue is the architecture**: each one in models.ARCHS has a colour family (plain orange,
  ResNet blue, pre-activation green, bottleneck purple) that nothing else uses;
- **lightness is depth** within the family, the same shade for a depth in every figure (deeper
  is darker), with a marker shape of its own as a second cue;
- **dashed is training error, solid is test error** (the paper's Fig. 6), and dashes mean nothing
  else; dotted lines are reference levels (an lr drop, an intact net), always labelled;
- markers sit on the evaluated points; the seeds' spread is a band; an error axis holds 0;
  integer quantities get integer ticks; colour scales get colourbars.

Figures draw inside matplotlib.rc_context(STYLE) on Figures of their own: neither pyplot's state
nor a user's matplotlibrc (usetex, an odd backend) reaches them, and a caller may pass style= to
restyle one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure

STYLE: dict[str, Any] = {
    "font.size": 13,
    "axes.titlesize": 14,
    "axes.labelsize": 13,
    "legend.fontsize": 11,
    "svg.fonttype": "none",
    "text.usetex": False,  # a user's matplotlibrc may ask for LaTeX the machine lacks
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.framealpha": 0.85,
    "legend.edgecolor": "none",
}
SPLITS: dict[str, dict[str, Any]] = {  # the paper's Fig. 6: training error dashed, test error solid
    "train": {"ls": "--", "lw": 2.0, "label": "training error"},
    "test": {"ls": "-", "lw": 2.4, "label": "test error"},
}
REFERENCE: dict[str, Any] = {"ls": ":", "lw": 1.3, "color": "#555555"}  # an lr drop, an intact net's level
UNKNOWN = "#7f7f7f"  # an architecture the registry does not hold
# Shade along a family (0 light, 1 dark) at the usual depths; others are placed between by log-depth.
DEPTH_SHADES = {8: 0.15, 14: 0.25, 20: 0.32, 32: 0.48, 44: 0.63, 56: 0.78, 110: 0.9, 164: 0.95, 1202: 1.0}
# A depth's marker, a second cue beside its shade (the usual CIFAR depths get the plainest shapes).
DEPTH_MARKERS = {20: "o", 32: "s", 44: "^", 56: "D", 110: "v", 8: "P", 14: "X", 164: "*", 1202: "h"}


def styled(draw):
    """Draw (and save) a figure in reslab's style, leaving matplotlib's global settings alone;
    style= (rcParams) restyles one figure."""

    @functools.wraps(draw)
    def wrapper(*args, style: dict | None = None, **kwargs):
        settings: Any = {**STYLE, **(style or {})}
        with matplotlib.rc_context(settings):
            return draw(*args, **kwargs)

    return wrapper


def subplots(nrows: int = 1, ncols: int = 1, figsize=None, layout: Any = "constrained", **kwargs):
    """A Figure of its own (not pyplot's), laid out so that nothing is cut, and its axes, like
    plt.subplots."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def family(arch: str) -> str:
    """The architecture's base colour (its hue family)."""
    from reslab.models import ARCHS

    return ARCHS[arch].colour if arch in ARCHS else UNKNOWN


def shade_of(depth: int) -> float:
    """Where a depth sits along its family, 0 (light) to 1 (dark): the same in every figure."""
    if depth in DEPTH_SHADES:
        return DEPTH_SHADES[depth]
    known = sorted(DEPTH_SHADES)
    if depth <= known[0] or depth >= known[-1]:
        return DEPTH_SHADES[known[0] if depth <= known[0] else known[-1]]
    lo = max(d for d in known if d < depth)
    hi = min(d for d in known if d > depth)
    f = (math.log(depth) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return DEPTH_SHADES[lo] + f * (DEPTH_SHADES[hi] - DEPTH_SHADES[lo])


def colour(arch: str, depth: int | None = None) -> str:
    """The colour of an architecture (its base) or of one of its depths (a shade: lighter
    towards white for shallow nets, darker towards black for deep ones)."""
    base = to_rgb(family(arch))
    if depth is None:
        return to_hex(base)
    t = shade_of(depth)
    if t <= 0.5:  # mix with white: 0 is 75% white
        w = 0.75 * (0.5 - t) / 0.5
        r, g, b = (c + (1 - c) * w for c in base)
        return to_hex((r, g, b))
    k = 0.55 * (t - 0.5) / 0.5  # mix with black: 1 is 55% black
    r, g, b = (c * (1 - k) for c in base)
    return to_hex((r, g, b))


def marker(depth: int) -> str:
    """A depth's marker shape (others than the usual depths: a small pentagon)."""
    return DEPTH_MARKERS.get(depth, "p")


def net(arch: str, depth: int, split: str | None = None) -> dict[str, Any]:
    """Line keywords for one network: its shade and marker, solid (or its split's dashes)."""
    kw = {"color": colour(arch, depth), "marker": marker(depth), "ms": 5, "ls": "-", "lw": 2.2}
    if split:
        kw.update(ls=SPLITS[split]["ls"], lw=SPLITS[split]["lw"])
    return kw


def split_handles(splits=("train", "test")) -> list:
    """Legend entries that explain the line styles (in grey: they say nothing of colour)."""
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], color="#333333", ls=SPLITS[s]["ls"], lw=SPLITS[s]["lw"], label=SPLITS[s]["label"])
        for s in splits
    ]


def band(ax, xs: Sequence, mean: Sequence[float], spread: Sequence[float], colour: str, alpha: float = 0.15) -> None:
    """The spread around a mean (the seeds', the lines') as a band in the line's colour."""
    low = [m - d for m, d in zip(mean, spread)]
    high = [m + d for m, d in zip(mean, spread)]
    ax.fill_between(xs, low, high, color=colour, alpha=alpha, lw=0)


def integer_axis(ax, which: str = "x") -> None:
    """Integer ticks for a count (a layer index, a number of blocks)."""
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if which == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def error_axis(ax, top: float = 100.0, label: str = "error (%)") -> None:
    """An error axis in %: 0 always shown, a little room below it (a curve at 0% is not hidden
    under the axis) and above the highest value."""
    high = min(100.0, max(1.0, top) * 1.08)
    ax.set_ylim(-0.025 * high, high)
    ax.set_ylabel(label)


def title(fig: Figure, text: str) -> None:
    """A figure's title (what it shows, then its provenance), never cut at the edges."""
    if text:
        fig.suptitle(text, fontsize=12, wrap=True)


def save(fig: Figure, path) -> list:
    """Write `path` as .png and .svg (atomically); returns both paths."""
    import io
    from pathlib import Path

    from reslab import files

    path = Path(path)
    out = []
    files.own_folder(path.parent)  # figures/ as a link would send the files elsewhere
    for ext in (".png", ".svg"):
        p = path.with_suffix(ext)
        buf = io.BytesIO()
        fig.savefig(buf, format=ext[1:], dpi=110, bbox_inches="tight")
        files.atomic_write_bytes(p, buf.getvalue())  # a full disk leaves the old figure, never half of one
        out.append(p)
    return out
