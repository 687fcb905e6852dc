"""Layer responses (paper, Fig. 7): the standard deviation of each 3x3 layer's output.

For post-activation nets (plain, resnet) the response of a 3x3 conv is the output of the BN that
follows it, before the ReLU or the addition. Pre-activation units put nothing after their last
conv, so there the response is the 3x3 conv's output itself. The paper does not say how the std
is taken; the default pools over images, channels and positions ("pooled"), and the mean over
channels of each channel's std ("per_channel") is reported beside it, with the BN scale |gamma|,
which in eval mode is close to each channel's std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import torch
import torch.nn as nn
from msgspec import UNSET, UnsetType

from reslab import style
from reslab.analysis.common import (
    add_run_args,
    caption,
    load_split,
    output_dir,
    write_result,
)
from reslab.models import BasicBlock, CifarNet
from reslab.options import positive_int
from reslab.page import count, esc, figure, finding_html, table
from reslab.plots import Figure, save, styled, subplots
from reslab.schema import Count, Name, NonEmpty, NonNegative, OfRun, Record, Verdict
from reslab.verdicts import mark


def response_modules(model: CifarNet) -> list[tuple[str, nn.Module, Any]]:
    """(name, module whose output is the response, BN whose |gamma| goes with it), in order."""
    if model.preact:
        return [
            (name, m, None) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
        ]
    out: list[tuple[str, nn.Module, Any]] = [("conv1", model.bn1, model.bn1)]
    for i, block in enumerate(model.blocks()):
        assert isinstance(block, BasicBlock)
        out += [(f"block{i + 1}.conv1", block.bn1, block.bn1), (f"block{i + 1}.conv2", block.bn2, block.bn2)]
    return out


@torch.inference_mode()
def layer_responses(model: CifarNet, x: torch.Tensor, batch_size: int = 500, block_gamma: float = 1.0) -> list[dict]:
    """Per 3x3 layer: pooled std, mean per-channel std and mean |gamma|, over the images x, and
    the scale its BN started from (block_gamma for a block's last BN, --block-gamma, else 1)."""
    model.eval()
    targets = response_modules(model)
    sums: dict[int, list[torch.Tensor]] = {}
    count: dict[int, int] = {}

    def hook(i):
        def fn(_m, _inp, out):
            o = out.double().transpose(0, 1).flatten(1)  # [channels, images * positions]
            s = [o.sum(1), (o * o).sum(1)]
            sums[i] = s if i not in sums else [a + b for a, b in zip(sums[i], s)]
            count[i] = count.get(i, 0) + o.shape[1]

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, (_, m, _) in enumerate(targets)]
    try:
        for j in range(0, len(x), batch_size):
            model(x[j : j + batch_size])
    finally:
        for h in handles:
            h.remove()
    last_bns = {id(block.last_bn) for block in model.blocks()}
    layers = []
    for i, (name, _, bn) in enumerate(targets):
        s1, s2 = sums[i]
        n = count[i]
        mean_c = s1 / n
        var_c = (s2 / n - mean_c**2).clamp_min(0)
        pooled_mean = s1.sum() / (n * len(s1))
        pooled_var = (s2.sum() / (n * len(s1)) - pooled_mean**2).clamp_min(0)
        layers.append(
            {
                "layer": name,
                "std": pooled_var.sqrt().item(),
                "std_per_channel": var_c.sqrt().mean().item(),
                "gamma": bn.weight.detach().abs().mean().item() if bn is not None else None,
                "gamma_init": block_gamma if id(bn) in last_bns else 1.0,
            }
        )
    return layers


RELATIVE_MARGIN = 0.05  # differences under 5% of the larger value are called unclear


def compare(a: float, b: float) -> bool | None:
    """True if a is clearly smaller than b, False if clearly larger, None if within the margin."""
    if abs(a - b) <= RELATIVE_MARGIN * max(abs(a), abs(b)):
        return None
    return a < b


def overall(outcomes: list[bool | None]) -> bool | None:
    if any(o is False for o in outcomes):
        return False
    return True if outcomes and all(outcomes) else None


# Fig. 7 is about networks trained with the paper's schedule (64k iterations). A reslab run
# shorter than FIG7_ITERATIONS (half of it, up to the first lr drop) is not that: its responses
# still carry much of the initialisation (a demo's 88 iterations do, whatever its scales did). Nets
# trained elsewhere (imported: no iteration count) are taken as trained. And while every net's BN
# scales |gamma| are still, on average, within GAMMA_MOVED of their initial values (1, or
# --block-gamma for a block's last BN), the responses show the initialisation whatever the length.
FIG7_ITERATIONS = 32_000
GAMMA_MOVED = 0.10
HOW_TO_TEST = (
    "Import trained networks (reslab import) and run reslab analyze responses on them, or train with the paper's "
    "full schedule (reslab experiment degradation, 64k iterations)."
)
UNTESTABLE = (
    "Fig. 7 concerns fully trained networks, and the BN scales of these nets have not moved from their initial "
    "values (mean |gamma| / initial {low:.3f} to {high:.3f}, within {margin:g}% of 1), so their responses show "
    "the initialisation. " + HOW_TO_TEST
)
TOO_SHORT = (
    "Fig. 7 concerns networks trained with the paper's schedule (64,000 iterations); these trained {length}, "
    "under the {least:,} that count here, so their responses still carry much of the initialisation. " + HOW_TO_TEST
)


def too_short(results: list[dict]) -> str | None:
    """The reason Fig. 7 cannot be tested on these nets because some trained too briefly, or None."""
    lengths = sorted({r["iterations"] for r in results if r.get("iterations") is not None})
    if not lengths or lengths[0] >= FIG7_ITERATIONS:
        return None
    length = f"{lengths[0]:,} iterations" if len(lengths) == 1 else f"{lengths[0]:,} to {lengths[-1]:,} iterations"
    return TOO_SHORT.format(length=length, least=FIG7_ITERATIONS)


def untrained_scales(results: list[dict]) -> tuple[float, float] | None:
    """(lowest, highest) over the nets of the mean ratio |gamma| / initial scale, when every one
    is still within GAMMA_MOVED of 1; None when some net's scales have moved (or none has BN
    scales to read). A layer without gamma_init (written before it was recorded) started at 1."""
    means = []
    for r in results:
        ratios = [ly["gamma"] / ly.get("gamma_init", 1.0) for ly in r["layers"] if ly.get("gamma") is not None]
        if ratios:
            means.append(sum(ratios) / len(ratios))
    if not means or any(abs(m - 1) > GAMMA_MOVED for m in means):
        return None
    return min(means), max(means)


def findings(results: list[dict], key: str = "std") -> list[dict]:
    """The paper's two observations, checked: (1) residual responses are smaller than plain ones
    at equal depth; (2) deeper residual nets have smaller responses. Means over layers; a
    difference within 5% counts as unclear. Nets whose BN scales have not moved from their
    initial value, or that trained less than FIG7_ITERATIONS, are not yet what Fig. 7 describes:
    each finding is then marked not testable, with the reason."""
    mean = {(r["arch"], r["depth"]): sum(layer[key] for layer in r["layers"]) / len(r["layers"]) for r in results}
    what = key.replace("_", " ")
    out = []
    untrained = untrained_scales(results)
    pairs = sorted(d for a, d in mean if a == "plain" and ("resnet", d) in mean)
    if pairs:
        text = "; ".join(
            f"depth {d}: ResNet {mean[('resnet', d)]:.3f} vs plain {mean[('plain', d)]:.3f}" for d in pairs
        )
        holds = overall([compare(mean[("resnet", d)], mean[("plain", d)]) for d in pairs])
        out.append(
            {
                "claim": "Residual responses are smaller than plain ones",
                "holds": holds,
                "text": f"Mean {what} over layers, {text}" + ("" if holds else " (within 5% counts as unclear)") + ".",
            }
        )
    res = sorted(d for a, d in mean if a == "resnet")
    if len(res) > 1:
        values = [mean[("resnet", d)] for d in res]
        holds = overall([compare(b, a) for a, b in zip(values, values[1:])])
        text = ", ".join(f"ResNet-{d} {v:.3f}" for d, v in zip(res, values))
        verdict = {
            True: "decreasing with depth",
            False: "not decreasing with depth",
            None: "no clear trend (differences within 5%)",
        }[holds]
        out.append(
            {
                "claim": "Deeper residual nets have smaller responses",
                "holds": holds,
                "text": f"Mean {what} over layers: {text} — {verdict}.",
            }
        )
    reason = (
        UNTESTABLE.format(low=untrained[0], high=untrained[1], margin=100 * GAMMA_MOVED)
        if untrained is not None
        else too_short(results)
    )
    if reason is not None:
        out = [{**f, "holds": None, "testable": False, "text": f"{reason} (Measured: {f['text']})"} for f in out]
    return out


class Layer(Record):
    """A 3x3 layer's response (the std of its BN's output) and its BN's mean |gamma|."""

    layer: Name
    std: NonNegative
    std_per_channel: NonNegative
    gamma: NonNegative | None  # None: no BN after the conv
    gamma_init: NonNegative | UnsetType = UNSET  # absent: written before it was recorded (1)


class ResponsesRun(OfRun, kw_only=True):
    iterations: Count | None = None  # None: trained elsewhere
    layers: NonEmpty[Layer]


class Result(Record):
    """analyses/responses.json."""

    split: Name
    images: Count
    runs: list[ResponsesRun]
    findings: list[Verdict]
    findings_per_channel: list[Verdict] = msgspec.field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# `reslab analyze responses` (the parts every analysis has: analysis/__init__.py)

FIGURES = ["responses"]  # under OUT/figures, each as .png and .svg
HELP = (
    "layer responses (Fig. 7): std of each 3x3 layer's output after BN, before ReLU/addition, over the test set "
    "in eval mode, pooled over images, channels and positions; the mean per-channel std and |gamma| are reported "
    "beside it"
)
SLOW = False


def add_args(p) -> None:
    add_run_args(p)
    p.add_argument("--limit", type=positive_int, help="use at most N images (default: all)")
    p.add_argument(
        "--split", choices=["test", "train"], default="test", help="the images to measure on (default %(default)s)"
    )


def command(args) -> tuple[dict, Path]:
    out = output_dir(args.runs, args.out, "responses")
    return analyze(args.runs, out, args.split, args.limit, args.dataset, args.data_dir), out


def summary(r: dict) -> list[str]:
    lines = []
    for run in r["runs"]:
        stds = [x["std"] for x in run["layers"]]
        lines.append(
            f"{run['label']}: response std over {len(stds)} 3x3 layers: mean {sum(stds) / len(stds):.3f}, "
            f"first {stds[0]:.3f}, last {stds[-1]:.3f}"
        )
    return lines + [f"[{mark(f['holds'], f.get('testable', True))}] {f['claim']}: {f['text']}" for f in r["findings"]]


def analyze(run_dirs: list[Path], out=None, split="test", limit=None, dataset=None, data_dir=None) -> dict:
    results = []
    for d in run_dirs:
        run = load_split(d, split, limit, dataset, data_dir)
        results.append(
            {
                "run": run.dir.name,
                "label": run.label,
                "arch": run.arch,
                "depth": run.depth,
                "iterations": run.config.resolved.iterations,  # None: trained elsewhere (imported)
                "layers": layer_responses(run.model, run.x, block_gamma=run.config.train.block_gamma),
            }
        )
    out = output_dir(run_dirs, out, "responses")
    result = {
        "split": split,
        "images": len(run.y),
        "runs": results,
        "findings": findings(results, "std"),
        "findings_per_channel": findings(results, "std_per_channel"),
    }
    write_result(out, "responses", result)
    caveat = ""
    if any(not f.get("testable", True) for f in result["findings"]):
        trained = [r["iterations"] for r in results if r["iterations"] is not None]
        caveat = "Not testable here: Fig. 7 concerns fully trained networks" + (
            f"; these trained {min(trained):,} iterations" if trained else ""
        )
    plot(results, out / "figures" / "responses", title=caption(run_dirs, len(run.y), split), caveat=caveat)
    return result


@styled
def plot(
    results: list[dict], path: Path | None = None, key: str = "std", title: str = "", caveat: str = ""
) -> Figure | list[Path]:
    """Figure 7: response std per 3x3 layer, in layer order (top: a block's last conv, whose output
    the shortcut adds to, joined; its first conv faded) and sorted (bottom). One
    hue per architecture, deeper nets darker; shallow nets are drawn on top. `caveat` (the
    verdict's "not testable here") is written across the figure."""
    fig, (top, bottom) = subplots(2, 1, figsize=(10, 8.8), layout="constrained")
    ordered = sorted(results, key=lambda r: (arch_rank(r["arch"]), r["depth"]))
    for r in sorted(results, key=lambda r: -r["depth"]):
        values = [layer[key] for layer in r["layers"]]
        kw = {**style.net(r["arch"], r["depth"]), "ms": 4, "zorder": 100 - r["depth"] / 100}
        last = [i for i, layer in enumerate(r["layers"], 1) if layer["layer"].endswith("conv2")]
        first = [i for i in range(1, len(values) + 1) if i not in last]
        top.plot(last, [values[i - 1] for i in last], label=r["label"], **kw)
        faded = {**kw, "ls": "none", "alpha": 0.4}
        top.plot(first, [values[i - 1] for i in first], **faded)
        bottom.plot(range(1, len(values) + 1), sorted(values, reverse=True), **{**kw, "marker": None})
    top.set_xlabel("3x3 layer, in order (faded: a block's first conv; joined: its last, before the addition)")
    bottom.set_xlabel("3x3 layer, sorted by response")
    for ax in (top, bottom):
        ax.set_ylabel("std of response")
        ax.set_ylim(bottom=0)
        style.integer_axis(ax)
    handles, labels = top.get_legend_handles_labels()
    by_label = dict(zip(labels, handles))
    columns = [[r["label"] for r in ordered if r["arch"] == a] for a in dict.fromkeys(r["arch"] for r in ordered)]
    rows = max(len(c) for c in columns)
    entries = [c[i] if i < len(c) else None for c in columns for i in range(rows)]  # one column per architecture
    from matplotlib.lines import Line2D

    blank = Line2D([], [], ls="none", label=" ")
    top.legend([by_label[e] if e else blank for e in entries], [e or " " for e in entries], ncol=len(columns))
    if caveat:  # the verdict's "not testable here", where the figure is seen
        top.set_title(caveat, fontsize=11, color="#8a5a00", loc="left")
    style.title(fig, "Layer responses (paper, Fig. 7)" + (f"\n{title}" if title else ""))
    return fig if path is None else save(fig, path)


def arch_rank(arch: str) -> int:
    from reslab.models import ARCHS

    return list(ARCHS).index(arch) if arch in ARCHS else len(ARCHS)


def section(r: dict, exp_dir: Path) -> str:
    """The report's section from OUT/analyses/responses.json (r) and OUT/figures."""
    rows = []
    for run in r["runs"]:
        layers = run["layers"]
        gammas = [x["gamma"] for x in layers if x["gamma"] is not None]
        rows.append(
            [
                run["label"],
                str(len(layers)),
                f"{sum(x['std'] for x in layers) / len(layers):.3f}",
                f"{sum(x['std_per_channel'] for x in layers) / len(layers):.3f}",
                f"{sum(gammas) / len(gammas):.3f}" if gammas else "-",
            ]
        )
    return (
        "<h2>Layer responses (paper, Fig. 7)</h2>"
        + "".join(finding_html(f) for f in r["findings"])
        + figure(exp_dir, "responses", "standard deviation of layer responses")
        + table(["network", "3x3 layers", "mean std (pooled)", "mean std (per channel)", "mean |gamma|"], rows)
        + f'<p class="note">Response: the output of the BN after each 3x3 conv, before the ReLU or the addition '
        f"(pre-activation nets: the 3x3 conv's output), on {count(r['images'])} {esc(r['split'])} images in eval "
        "mode. Pooled: one std over images, channels and positions; per channel: the mean over channels of "
        "each channel's std. In eval mode a channel's std after BN is close to its |gamma|. The paper's findings "
        "concern fully trained networks; after a short run the BN scales are still near their initial values "
        "(1, or --block-gamma for each block's last BN), and so are the responses.</p>"
    )
