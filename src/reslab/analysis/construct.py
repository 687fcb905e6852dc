"""The constructed solution (paper, section 1): a deeper net that is a trained shallower net
plus layers that compute the identity, so its training error is exactly the shallow net's.

Extra plain layers: a Dirac conv kernel (1 at the centre tap of the same channel) and a BN made
a pass-through in eval mode (running mean 0, running variance 1 - eps, gamma 1, beta 0); the
ReLU after it is the identity on the non-negative output of the previous ReLU. Extra residual
blocks: the residual branch is zeroed (last BN gamma = beta = 0, or the last conv for
pre-activation units), so the block computes relu(0 + x) = x. Exact in eval mode only, since
train-mode BN normalises by batch statistics.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import torch
from msgspec import UNSET, UnsetType

from reslab import style
from reslab.analysis.common import (
    add_run_args,
    load_split,
    output_dir,
    read_result,
    write_result,
)
from reslab.errors import UserError
from reslab.evaluate import error_rate, predict
from reslab.models import ARCHS, CifarNet, ModelConfig, blocks_per_stage, build_model, describe, display
from reslab.options import positive_int
from reslab.page import figure, finding_html, table
from reslab.plots import Figure, save, styled, subplots
from reslab.schema import Count, Fraction, Name, NonNegative, Record
from reslab.style import colour
from reslab.summary import pct as pc


def construct_deeper(shallow: CifarNet, depth: int, seed: int = 0) -> tuple[CifarNet, list[str]]:
    """A net of `depth` whose first blocks in each stage are `shallow`'s and whose extra blocks
    (appended at the end of each stage, where the shape no longer changes) are identities.
    Returns the net (eval mode) and the names of the identity blocks."""
    cfg: ModelConfig = shallow.config
    n_small, n_big = blocks_per_stage(cfg.arch, cfg.depth), blocks_per_stage(cfg.arch, depth)
    if n_big < n_small:
        raise UserError(f"--depth {depth} is shallower than the source network ({cfg.depth}); give a deeper one.")
    torch.manual_seed(seed)  # the extra blocks' other weights start as a fresh net's would
    deep = build_model(ModelConfig(**{**cfg.to_dict(), "depth": depth}))
    own = shallow.state_dict()
    target = deep.state_dict()
    for key, value in own.items():
        target[key] = value.clone()  # same names for the stem, the first n_small blocks and the head
    deep.load_state_dict(target)
    added = []
    for s, stage in enumerate((deep.layer1, deep.layer2, deep.layer3), start=1):
        for j in range(n_small, n_big):
            block: Any = stage[j]  # each block class knows how to become an identity
            block.make_identity()
            added.append(f"layer{s}.{j}")
    return deep.eval(), added


# What a constructed net has not done: the source's training length and schedule are not its own.
UNTRAINED = ("iterations", "epochs", "steps_per_epoch", "eval_every")
SAME_OUTPUTS = 1e-4  # largest logit difference still called "the same" (fp32 sums in another order)


def outputs_text(result: dict) -> str:
    """What was measured about the constructed net's outputs, in words that follow the numbers."""
    diff = result["max_abs_difference"]
    if diff <= SAME_OUTPUTS:
        return f"computes the same outputs (largest logit difference {diff:.1e})"
    same = result.get("same_predictions")
    return f"computes different outputs (largest logit difference {diff:.1e}" + (
        ", the same predictions on every image)" if same else ", and changes some predictions)"
    )


class Construction(Record):
    """A deeper net built from a trained shallower one, and SGD's net of that depth where there is one."""

    source: Name
    source_label: Name
    arch: Name
    from_depth: Count
    depth: Count
    identity_blocks: Count
    images: Count
    max_abs_difference: NonNegative
    same_predictions: bool
    source_train_error: Fraction
    constructed_train_error: Fraction
    scratch: Name | UnsetType = UNSET
    scratch_train_error: Fraction | UnsetType = UNSET


class Result(Record):
    """analyses/construct.json: every construction made into this directory."""

    results: list[Construction]


# ---------------------------------------------------------------------------------------------
# `reslab analyze construct` (the parts every analysis has: analysis/__init__.py)

FIGURES = ["construct"]  # under OUT/figures, each as .png and .svg
HELP = (
    "build a deeper net from a trained shallower one plus identity layers (Dirac convs with pass-through BN for "
    "plain nets, zeroed residual branches for residual nets); check it computes the same function, and compare "
    "its training error with SGD's from scratch"
)
SLOW = False


def add_args(p) -> None:
    p.add_argument("--from", dest="source", required=True, help="the trained shallower run directory")
    p.add_argument("--depth", type=positive_int, required=True, help="depth of the constructed network")
    p.add_argument(
        "--compare", help="run trained from scratch at --depth (default: a sibling ARCH-DEPTH-seedS run next to --from)"
    )
    add_run_args(p, runs=False)
    p.add_argument("--limit", type=positive_int, help="use at most N images (default: all)")


def command(args) -> tuple[dict, Path]:
    compare = Path(args.compare) if args.compare else None
    out = output_dir([Path(args.source)], args.out, "construct")
    return analyze(Path(args.source), args.depth, out, compare, args.limit, args.dataset, args.data_dir), out


def summary(r: dict) -> list[str]:
    scratch = (
        f"; SGD from scratch at depth {r['depth']} ({r['scratch']}): {r['scratch_train_error']:.2%}"
        if "scratch" in r
        else ""
    )
    return [
        f"{r['source_label']} extended to depth {r['depth']} with {r['identity_blocks']} identity blocks: "
        f"max |difference| of the outputs {r['max_abs_difference']:.2e} on {r['images']} training images; "
        f"training error {r['source_train_error']:.2%} (shallow) and {r['constructed_train_error']:.2%} "
        f"(constructed){scratch}"
    ]


def analyze(
    source: Path,
    depth: int,
    out=None,
    compare: Path | None = None,
    limit=None,
    dataset=None,
    data_dir=None,
    draw: bool = True,
) -> dict:
    """Build the deeper identity-extended net, check it equals the source, and compare its
    training error with what SGD reached from scratch at that depth. The figure shows every
    construction in OUT; draw=False leaves it to a later call (it would be drawn over)."""
    src = load_split(source, "train", limit, dataset, data_dir)
    if src.arch not in ARCHS:
        raise UserError(f"cannot construct from a '{src.arch}' network.")
    deep, added = construct_deeper(src.model, depth, seed=src.config.train.seed)
    shallow_logits, deep_logits = predict(src.model, src.x), predict(deep, src.x)
    result = {
        "source": src.dir.name,
        "source_label": src.label,
        "arch": src.arch,
        "from_depth": src.depth,
        "depth": depth,
        "identity_blocks": len(added),
        "images": len(src.y),
        "max_abs_difference": (deep_logits - shallow_logits).abs().max().item(),
        "same_predictions": bool((deep_logits.argmax(1) == shallow_logits.argmax(1)).all()),
        "source_train_error": (shallow_logits.argmax(1) != src.y).float().mean().item(),
        "constructed_train_error": (deep_logits.argmax(1) != src.y).float().mean().item(),
    }
    scratch = compare or find_sibling(source, src.arch, depth)
    if scratch is not None:
        other = load_split(scratch, "train", limit, dataset, data_dir)
        result["scratch"] = other.dir.name
        result["scratch_train_error"] = error_rate(other.model, other.x, other.y)
    out = output_dir([source], out, "construct")
    # Under analyses/, not beside the trained runs: it is not a run of the experiment's grid.
    save_constructed(
        deep, src.config, out / "analyses" / "constructed" / f"{src.arch}-{depth}-from-{src.depth}", result
    )
    results = (read_result(out, "construct") or {}).get("results", [])
    results = [r for r in results if (r["source"], r["depth"]) != (result["source"], depth)] + [result]
    write_result(out, "construct", {"results": results})
    if draw:
        plot(results, out / "figures" / "construct", budget(src.config))
    return result


def budget(config) -> str:
    """The source run's dataset, length and seed, for the figure's title."""
    c, h, w = config.data.image_shape
    iterations = config.resolved.iterations
    length = f"{iterations:,} iterations" if iterations is not None else "trained elsewhere"
    return f"{config.dataset} ({h}x{w}), {length}, seed {config.train.seed}"


@styled
def plot(results: list[dict], path: Path | None = None, title: str = "") -> Figure | list[Path]:
    """The constructed solution as bars: for each construction, the training error of the
    shallow net, of the identity-extended deep net built from it, and of SGD's deep net."""
    from matplotlib.patches import Patch

    fig, ax = subplots(figsize=(3.4 + 2.8 * len(results), 5.0), layout="constrained")
    # Hue is the architecture, lightness the depth (the shallow net light, the deep nets dark);
    # the constructed deep net is hatched, SGD's deep net plain.
    bars = [
        ("source_train_error", "shallow net, trained by SGD", lambda r: r["from_depth"], ""),
        ("constructed_train_error", "deeper net, built from it plus identity layers", lambda r: r["depth"], "//"),
        ("scratch_train_error", "deeper net, trained by SGD from scratch", lambda r: r["depth"], ""),
    ]
    width, top = 0.26, max([100 * (r.get(k) or 0) for r in results for k, *_ in bars] + [1])
    for j, (key, _, depth_of, hatch) in enumerate(bars):
        for i, r in enumerate(results):
            if r.get(key) is None:
                continue
            x, y, shade = i + (j - 1) * width, 100 * r[key], colour(r["arch"], depth_of(r))
            # A bar of 0 is drawn as a stroke at 0, with its value above it.
            ax.bar(x, max(y, top * 0.006), width, color=shade, edgecolor="white" if hatch else shade, hatch=hatch)
            ax.annotate(f"{y:.1f}%", (x, y), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=10)
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels([f"{r['source_label']} → {display(r['arch'], r['depth'])}" for r in results], fontsize=11)
    ax.set_ylabel("training error (%), eval mode")
    ax.set_ylim(0, top * 1.3)
    grey = ["#bbbbbb", "#555555", "#555555"]
    legend = [Patch(facecolor=g, hatch=h, edgecolor="white", label=label) for (_, label, _, h), g in zip(bars, grey)]
    ax.legend(handles=legend, fontsize=10, loc="upper left")
    ax.grid(axis="x", visible=False)
    heading = "A deeper net can do as well as a shallower one: built from it plus identity layers (paper, Sec. 1)"
    style.title(fig, heading + (f"\n{title}" if title else ""))
    return fig if path is None else save(fig, path)


def find_sibling(source: Path, arch: str, depth: int) -> Path | None:
    """A run of the same arch at `depth` (same seed preferred) next to `source`, trained by SGD."""
    from reslab import runs

    seed = runs.read_config(source).train.seed
    candidates = [
        Path(source).parent / f"{arch}-{depth}-seed{seed}",
        *sorted(Path(source).parent.glob(f"{arch}-{depth}-seed*")),
    ]
    return next((c for c in candidates if (c / "model.safetensors").exists()), None)


def save_constructed(model, source_config, out: Path, result: dict) -> None:
    """The constructed net as a run directory, so it can be evaluated, analysed or trained on
    (reslab train --init-from OUT/model.safetensors)."""
    from reslab import runs

    config = dataclasses.replace(
        source_config,
        model=model.config,
        train=dataclasses.replace(source_config.train, depth=model.config.depth),
        # Its own counts; it has not been trained, so no iterations or lr drops of its own.
        resolved=msgspec.structs.replace(
            source_config.resolved,
            **{k: None for k in UNTRAINED},
            milestones=[],
            **describe(model, source_config.data.image_shape),
        ),
        constructed={k: result[k] for k in ("source", "from_depth", "depth", "identity_blocks")},
    )
    with runs.run_lock(out):
        runs.write_run(
            out,
            config,
            model,
            ("finished", f"constructed from {result['source']} with {result['identity_blocks']} identity blocks"),
        )


def section(r: dict, exp_dir: Path) -> str:
    """The report's section from OUT/analyses/construct.json (r) and OUT/figures."""
    rows, findings = [], []
    for c in r["results"]:
        deep = display(c["arch"], c["depth"])
        rows.append(
            [
                f"{c['source_label']} → {deep}",
                str(c["identity_blocks"]),
                f"{c['max_abs_difference']:.1e}",
                pc(c["source_train_error"]),
                pc(c["constructed_train_error"]),
                pc(c.get("scratch_train_error")),
            ]
        )
        if "scratch_train_error" in c:
            better = c["constructed_train_error"] < c["scratch_train_error"] - 0.01
            text = (
                f"{deep} built from the trained {c['source_label']} plus {c['identity_blocks']} identity blocks "
                f"{outputs_text(c)} and has "
                f"{pc(c['constructed_train_error'])}% training error; SGD from scratch reached "
                f"{pc(c['scratch_train_error'])}%."
            )
            residual = c["arch"] in ARCHS and ARCHS[c["arch"]].residual
            found = c["scratch_train_error"] <= c["constructed_train_error"] + 0.01
            if residual:  # the paper: with shortcuts, the solver finds such solutions itself
                text += (" SGD found a solution as good as the constructed one, as residual learning should."
                         if found else " SGD did not find a solution as good as the constructed one.")  # fmt: skip
                claim, holds = f"SGD finds what the construction shows exists ({deep})", found
            else:  # the paper: without shortcuts, a solution at least as good exists, and SGD misses it
                text += (" A solution at least as good as the shallow net exists, yet the solver did not find it."
                         if better else " Here SGD found a solution as good as the constructed one.")  # fmt: skip
                claim, holds = f"A deeper plain net could do as well, but SGD does not get there ({deep})", better
            findings.append({"claim": claim, "holds": holds, "text": text})
    return (
        "<h2>The constructed solution</h2>"
        + "".join(finding_html(f) for f in findings)
        + figure(exp_dir, "construct", "training error of the shallow, constructed and SGD-trained nets")
        + table(
            [
                "construction",
                "identity blocks",
                "max |Δ output|",
                "shallow train err %",
                "constructed train err %",
                "SGD from scratch train err %",
            ],
            rows,
        )
        + '<p class="note">Training errors measured here in eval mode on the unaugmented training images. '
        "Extra plain layers: Dirac kernels and pass-through BN (exact on the non-negative outputs of a ReLU); "
        "extra residual blocks: the residual branch zeroed (last BN gamma = beta = 0).</p>"
    )
