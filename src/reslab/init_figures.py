"""The init experiment's figures, in reslab's visual grammar (style.py), and its report page."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from reslab import style
from reslab.init_verdicts import by
from reslab.models import display
from reslab.style import REFERENCE, net, save, split_handles, styled, subplots


def caption(found: dict) -> str:
    """Data, image size, budget and seeds of the runs, as the other figures say it."""
    return found.get("title", "")


@styled
def gap_vs_scale(found: dict, path: Path | None = None) -> Figure | list[Path]:
    """Deep minus shallow final training error against the initial scale, per architecture, the
    seeds' range as a band."""
    rows, scales = found["runs"], sorted(found["scales"], reverse=True)
    depths = sorted({r["depth"] for r in rows})
    fig, ax = subplots(figsize=(7.4, 4.8))
    xs = list(range(len(scales)))
    for arch in ("plain", "resnet"):
        per_scale = []
        for s in scales:
            seeds = {r["seed"] for r in by(rows, arch=arch, scale=s)}
            gaps = [seed_gap(rows, arch, s, seed, depths[-1], depths[0]) for seed in sorted(seeds)]
            per_scale.append([g for g in gaps if g is not None])
        points = [(x, g) for x, g in zip(xs, per_scale) if g]
        if not points:
            continue
        ax.plot(
            [x for x, _ in points],
            [100 * sum(g) / len(g) for _, g in points],
            color=style.colour(arch),
            marker="o",
            lw=2.2,
            label=f"{display(arch, depths[-1])} minus {display(arch, depths[0])}",
        )
        ax.fill_between(
            [x for x, _ in points],
            [100 * min(g) for _, g in points],
            [100 * max(g) for _, g in points],
            color=style.colour(arch),
            alpha=0.15,
            lw=0,
        )
    ax.axhline(0, **{**REFERENCE, "label": "no difference"})
    ax.set_xticks(xs, [f"{s:g}" for s in scales])
    ax.set_xlabel("initial scale of every block's last BN (--block-gamma)")
    ax.set_ylabel("deeper minus shallower net,\nfinal training error (points)")
    ax.legend(fontsize=10, loc="best")
    style.title(fig, "Does depth help? It depends on where the net starts\n" + caption(found))
    return fig if path is None else save(fig, path)


def seed_gap(rows: list[dict], arch: str, scale: float, seed: int, deep: int, shallow: int) -> float | None:
    d = by(rows, arch=arch, scale=scale, seed=seed, depth=deep)
    s = by(rows, arch=arch, scale=scale, seed=seed, depth=shallow)
    return d[0]["train_error"] - s[0]["train_error"] if d and s else None


@styled
def ratios(found: dict, path: Path | None = None) -> Figure | list[Path]:
    """Each residual block's ‖F(x)‖ / ‖shortcut(x)‖ at initialisation (top) and after training
    (bottom), one column per scale, one shade per depth (seed 0 or the first seed)."""
    rows, scales = found["runs"], sorted(found["scales"], reverse=True)
    res = [r for r in rows if r["arch"] == "resnet"]
    first = min((r["seed"] for r in res), default=0)
    fig, axes = subplots(2, len(scales), figsize=(3.6 * len(scales) + 1, 6.6), sharey="row", squeeze=False)
    for col, s in enumerate(scales):
        for r in sorted(by(res, scale=s, seed=first), key=lambda r: -r["depth"]):
            for row, when in enumerate(("init", "end")):
                values = [b["ratio"] for b in r[when]["blocks"]]
                axes[row][col].plot(
                    range(1, len(values) + 1), values, label=r["label"], **{**net("resnet", r["depth"]), "ms": 3}
                )
        axes[0][col].set_title(f"scale {s:g}")
        axes[1][col].set_xlabel("residual block")
        for row in (0, 1):
            axes[row][col].axhline(1, **REFERENCE, label="branch as large as the shortcut")
            axes[row][col].set_ylim(bottom=0)
            style.integer_axis(axes[row][col])
    axes[0][0].set_ylabel("at initialisation\n‖F(x)‖ / ‖shortcut(x)‖")
    axes[1][0].set_ylabel("after training\n‖F(x)‖ / ‖shortcut(x)‖")
    axes[0][-1].legend(fontsize=9)
    style.title(fig, f"How far each residual block is from the identity (seed {first})\n" + caption(found))
    return fig if path is None else save(fig, path)


@styled
def curves(found: dict, path: Path | None = None) -> Figure | list[Path]:
    """Training (dashed) and test (solid) error against iterations, one panel per scale."""
    rows, scales = found["runs"], sorted(found["scales"], reverse=True)
    fig, axes = subplots(1, len(scales), figsize=(3.8 * len(scales) + 1, 4.6), sharey=True, squeeze=False)
    for ax, s in zip(axes[0], scales):
        for arch in ("plain", "resnet"):
            for depth in sorted({r["depth"] for r in by(rows, arch=arch, scale=s)}):
                runs_ = by(rows, arch=arch, scale=s, depth=depth)
                its = [c[0] for c in runs_[0]["curve"]]
                for split, k in (("train", 1), ("test", 2)):
                    mean = [100 * sum(r["curve"][i][k] for r in runs_) / len(runs_) for i in range(len(its))]
                    label = display(arch, depth) if split == "train" else None
                    ax.plot(
                        its, mean, label=label, markevery=max(1, len(its) // 12), **{**net(arch, depth, split), "ms": 3}
                    )
        ax.set_title(f"scale {s:g}")
        ax.set_xlabel("iterations")
        style.error_axis(ax, 100)
    axes[0][-1].legend(handles=axes[0][-1].get_legend_handles_labels()[0] + split_handles(), fontsize=9)
    style.title(fig, "Error during training at each initial scale\n" + caption(found))
    return fig if path is None else save(fig, path)


FIGURES = {"init_gap": gap_vs_scale, "init_ratios": ratios, "init_curves": curves}


def draw_all(out: Path, found: dict) -> dict[str, Path]:
    """Every figure of the experiment, written under OUT/figures; name -> PNG."""
    return {name: draw(found, Path(out) / "figures" / name)[0] for name, draw in FIGURES.items()}


def page(out: Path, found: dict, figures: dict[str, Path]) -> str:
    """OUT/report.html: the verdicts, the table, the figures, links to each scale's own report."""
    from html import escape

    from reslab.page import embed_png, table, verdict_html
    from reslab.report import CSS, MARKS
    from reslab.verdicts import Verdict

    head = [
        "scale",
        "network",
        "seed",
        "train error %",
        "test error %",
        "‖F‖/‖x‖ at init",
        "after training",
        "signal at init",
    ]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    rows = [
        [
            f"{r['scale']:g}",
            r["label"],
            str(r["seed"]),
            f"{100 * r['train_error']:.1f}",
            f"{100 * r['test_error']:.1f}",
            fmt(r["init_ratio"]),
            fmt(r["end_ratio"]),
            fmt(r["init_signal"]),
        ]
        for r in found["runs"]
    ]
    links = " · ".join(f'<a href="scale-{s:g}/report.html">scale {s:g}</a>' for s in found["scales"])
    parts = [
        "<h1>How near the identity a residual net starts</h1>",
        f'<p class="sub">{escape(caption(found))} · each scale\'s own report: {links}</p>',
        "<h2>What the measurements say</h2>" + MARKS,
        *(verdict_html(Verdict(**v)) for v in found["verdicts"]),
        *(f'<div class="card">{embed_png(p, name)}</div>' for name, p in figures.items()),
        "<h2>Every run</h2>" + table(head, rows),
        "<p class=\"note\">‖F‖/‖x‖: the mean over residual blocks of the branch's norm against the shortcut's on a "
        "fixed batch of training images (train-mode BN at initialisation, eval mode after training); signal: the "
        "std over images of the features that reach the classifier, against the stem's. See docs/init.md.</p>",
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>reslab: initial scale</title>'
        f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>"
    )
