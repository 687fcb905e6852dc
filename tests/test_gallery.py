"""Every figure reslab draws, rendered from small runs and each analysis, checked against the one
visual grammar (style.py): colours from the palette, each with one meaning; dashes only for
training error; titles that say what was measured; nothing outside the canvas; 0 on every error
axis."""

import itertools
import json

import pytest
from conftest import tiny_data
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex

from reslab import plots, runs, style
from reslab.config import TrainConfig
from reslab.models import ARCHS
from reslab.summary import summarize
from reslab.train import train

DEPTHS = (8, 14)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """name -> Figure: the experiment figures of a plain/ResNet grid and every analysis's figure."""
    from reslab.analysis import construct, gradients, identity, landscape, lesion, responses

    exp = tmp_path_factory.mktemp("gallery")
    data = tiny_data()
    for arch, depth, seed in itertools.product(("plain", "resnet"), DEPTHS, (0, 1)):
        cfg = TrainConfig(arch=arch, depth=depth, seed=seed, dataset="synthetic", iterations=24, batch_size=32,
                          eval_every=6, precision="fp32", device="cpu")  # fmt: skip
        train(cfg, exp / f"{arch}-{depth}-seed{seed}", data=data, progress=False)
    records = runs.gather(exp)[0]
    title = plots.figure_title(records)
    summary = summarize(exp, all_runs=records)
    dirs = [exp / f"{a}-{d}-seed0" for a in ("plain", "resnet") for d in DEPTHS]
    figures = {
        "error_curves": plots.error_curves(records, title=title),
        "error_vs_depth": plots.error_vs_depth(summary, title=title),
        "reach_vs_depth": plots.reach_vs_depth(summary, title=title, budget=24, every=6),
    }
    r = responses.analyze(dirs, exp, limit=64)
    figures["responses"] = responses.plot(r["runs"], title="synthetic, 24 iterations; 64 test images", caveat="x")
    c = construct.analyze(exp / "plain-8-seed0", 14, exp, limit=64)
    figures["construct"] = construct.plot([c], title=title)
    les = lesion.analyze(dirs, exp, limit=64, samples=2)
    figures["lesion"] = lesion.plot(les["runs"], title=title)
    g = gradients.analyze(dirs[:2], exp, depths=(8, 14), images=16, points=8, lines=2)
    figures["gradient_norms"] = gradients.plot_norms(g["runs"], title=title)
    figures["shattering"] = gradients.plot_shattering(g["shattering"])
    land = landscape.analyze(dirs[:2], exp, resolution=3, images=32)
    figures["landscape"] = landscape.plot(land["runs"], title=title)
    ident = identity.analyze(exp, max_k=2, steps=5)
    figures["identity"] = identity.plot(ident)
    for fig in figures.values():
        FigureCanvasAgg(fig).draw()  # the layout and the text extents as they will be saved
    return figures, title, summary


def palette() -> dict[str, str]:
    """Every colour a figure may use, with its one meaning."""
    meaning = {style.colour(a): f"{a}" for a in ARCHS}
    for a in ARCHS:
        for d in (*style.DEPTH_SHADES, *DEPTHS):
            meaning.setdefault(style.colour(a, d), f"{a}-{d}")
    return meaning


def test_the_palette_gives_each_colour_one_meaning():
    seen: dict[str, str] = {}
    for a in ARCHS:
        for key, c in [(a, style.colour(a))] + [(f"{a}-{d}", style.colour(a, d)) for d in style.DEPTH_SHADES]:
            assert seen.setdefault(c, key) == key, f"{c} means {seen[c]} and {key}"


def lines_of(fig):
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_visible()]


NEUTRAL = {"#333333", "#555555", "#bbbbbb", "#ffffff", "#000000"}


def test_every_colour_comes_from_the_palette(gallery):
    figures, *_ = gallery
    allowed = set(palette()) | NEUTRAL
    for name, fig in figures.items():
        if name == "landscape":  # its colour scale is a colourmap, with a colourbar (checked below)
            continue
        used = {to_hex(line.get_color()) for line in lines_of(fig)}
        assert used <= allowed, f"{name}: {used - allowed}"


def test_dashes_mean_training_error_and_nothing_else(gallery):
    figures, *_ = gallery
    for name, fig in figures.items():
        dashed = [line for line in lines_of(fig) if line.get_linestyle() == "--"]
        if name in ("error_curves", "error_vs_depth"):
            assert dashed, name  # training error is drawn, dashed
        else:
            assert not dashed, f"{name} draws dashed lines, which mean training error"
        legend_texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        if dashed:
            assert "training error" in legend_texts, name


def test_titles_say_what_was_measured(gallery):
    figures, title, _ = gallery
    assert "synthetic" in title and "24 iterations" in title and "seeds 0, 1" in title
    for name, fig in figures.items():
        text = fig.get_suptitle()
        assert text, f"{name} has no title"
        if name not in ("identity", "shattering"):  # these train their own nets, at initialisation
            assert "synthetic" in text and "iterations" in text, f"{name}: {text}"


def test_nothing_is_drawn_outside_the_canvas(gallery):
    """The box around everything drawn (ticks, labels, legends, titles) lies within the figure."""
    figures, *_ = gallery
    for name, fig in figures.items():
        drawn = fig.get_tightbbox(FigureCanvasAgg(fig).get_renderer())
        box = fig.bbox_inches
        inside = drawn.x0 >= box.x0 - 0.01 and drawn.y0 >= box.y0 - 0.01
        inside = inside and drawn.x1 <= box.x1 + 0.01 and drawn.y1 <= box.y1 + 0.01
        assert inside, f"{name}: drawn over {drawn}, the figure is {box}"


def test_every_error_axis_holds_zero_and_integer_axes_have_integer_ticks(gallery):
    figures, *_ = gallery
    for name, fig in figures.items():
        for ax in fig.axes:
            if "error (%)" in ax.get_ylabel():
                assert ax.get_ylim()[0] <= 0 <= ax.get_ylim()[1], f"{name}: {ax.get_ylim()}"
            if "layer" in ax.get_xlabel() or "block" in ax.get_xlabel():
                ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                assert all(float(t).is_integer() for t in ticks), f"{name}: {ticks}"


def test_colour_scales_have_colourbars_and_compared_panels_share_a_range(gallery):
    figures, *_ = gallery
    fig = figures["landscape"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2
    slices = [ax for ax in fig.axes if ax.get_title().endswith("1D slice")]
    assert len({ax.get_ylim() for ax in slices}) == 1


def test_figures_take_a_style(gallery):
    figures, _, summary = gallery
    small = plots.error_vs_depth(summary, style={"font.size": 7})
    default = figures["error_vs_depth"]
    size = lambda fig: fig.axes[0].get_xticklabels()[0].get_fontsize()  # noqa: E731
    assert size(small) == 7 and size(default) == style.STYLE["font.size"]
    json.dumps(style.STYLE)  # plain settings a user can copy and change
