"""Can a stack of nonlinear layers learn the identity? (paper, section 1; Zhang et al. 2020)

Stacks with the same number of 3x3 convolutions, 2k plain conv-BN-ReLU layers or k residual
blocks (two convs each), are trained to reproduce their input (MSE), from the same data and
budget; the relative error ||f(x) - x||^2 / ||x||^2 left on held-out inputs is measured (Adam,
lr 0.01 dropped tenfold at 50% and 75% of the steps). Inputs are
non-negative (they stand for the output of a previous ReLU layer), so a ReLU at the end does not
make the identity impossible.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import torch
import torch.nn as nn
import torch.nn.functional as F

from reslab import files, style
from reslab.analysis.common import (
    outputs,
    progress_bar,
    write_result,
)
from reslab.models import BasicBlock, conv3x3
from reslab.options import positive_int
from reslab.page import figure, finding_html, table
from reslab.plots import Figure, save, styled, subplots
from reslab.schema import Count, NonEmpty, NonNegative, Record, Text
from reslab.verdicts import mark


class PlainStack(nn.Module):
    def __init__(self, k: int, channels: int):
        super().__init__()
        self.layers = nn.Sequential(
            *[nn.Sequential(conv3x3(channels, channels), nn.BatchNorm2d(channels), nn.ReLU()) for _ in range(k)]
        )

    def forward(self, x):
        return self.layers(x)


class ResidualStack(nn.Module):
    def __init__(self, k: int, channels: int):
        super().__init__()
        self.blocks = nn.Sequential(*[BasicBlock(channels, channels, 1, "A") for _ in range(k)])

    def forward(self, x):
        return self.blocks(x)


def make_stack(kind: str, k: int, channels: int) -> nn.Module:
    net = PlainStack(k, channels) if kind == "plain" else ResidualStack(k, channels)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def inputs(n: int, channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Non-negative, spatially smooth feature maps (ReLU of blurred Gaussian noise)."""
    z = torch.randn(n, channels, size, size, generator=generator)
    z = F.avg_pool2d(F.pad(z, (1, 1, 1, 1), mode="circular"), 3, stride=1)
    return F.relu(z * 3)


def identity_error(
    kind: str,
    k: int,
    channels: int = 16,
    size: int = 8,
    steps: int = 300,
    lr: float = 0.01,
    batch: int = 64,
    seed: int = 0,
) -> float:
    """Relative squared error left after training a stack of k layers/blocks to be the identity."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = make_stack(kind, k, channels)
    train_x, test_x = inputs(2048, channels, size, g), inputs(512, channels, size, g)
    # Adam, the same budget for both kinds: the question is whether the identity can be found, not
    # how well a learning rate suits one kind (with SGD at a fixed lr, deep stacks of either kind
    # can diverge, which would say nothing about the identity).
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for step in range(steps):
        idx = torch.randint(0, len(train_x), (batch,), generator=g)
        xb = train_x[idx]
        for group in opt.param_groups:  # step decay at 50% and 75%, as in the paper's schedule
            group["lr"] = lr * 0.1 ** ((step >= steps // 2) + (step >= 3 * steps // 4))
        loss = F.mse_loss(net(xb), xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return ((net(test_x) - test_x).pow(2).sum() / test_x.pow(2).sum()).item()


# How much larger the plain stack's error must be, at equal convolutions, to count as "trouble".
FACTOR = 5


def finding(result: dict) -> dict:
    """The paper's claim judged on the trend over depth, not on one k: at how many conv counts
    (from 4 up, where there is depth to speak of) 2k plain layers leave more than FACTOR times
    the error of k residual blocks, and whether the plain error grows with depth."""
    plain, residual = result["plain"], result["residual"]
    deep = [(p, r) for p, r in zip(plain, residual) if p["convs"] >= 4] or list(zip(plain, residual))
    worse = sum(p["error"] > FACTOR * r["error"] for p, r in deep)
    not_worse = sum(p["error"] <= r["error"] for p, r in deep)
    grows = plain[-1]["error"] > 2 * plain[0]["error"]
    holds = True if 2 * worse > len(deep) and grows else False if 2 * not_worse > len(deep) else None
    first, last = plain[0], plain[-1]
    text = (
        f"After {result['steps']} steps, at equal numbers of 3x3 convolutions, the plain stack leaves more than "
        f"{FACTOR} times the residual stack's error at {worse} of {len(deep)} depths from 4 convolutions up; "
        f"its error grows from {first['error']:.2e} ({first['convs']} convs) to {last['error']:.2e} "
        f"({last['convs']} convs), the residual stack's from {residual[0]['error']:.2e} to "
        f"{residual[-1]['error']:.2e}."
    )
    return {"claim": "Stacked nonlinear layers have trouble learning the identity", "holds": holds, "text": text}


class Stack(Record):
    """A stack's error at reproducing its input after training."""

    convs: Count  # 3x3 convolutions
    k: Count  # plain layers or residual blocks
    error: NonNegative


class Result(Record):
    """analyses/identity.json."""

    steps: Count
    plain: NonEmpty[Stack]
    residual: NonEmpty[Stack]
    unit: dict[str, Text] = msgspec.field(default_factory=dict)  # what k counts in each stack


# ---------------------------------------------------------------------------------------------
# `reslab analyze identity` (the parts every analysis has: analysis/__init__.py)

FIGURES = ["identity"]  # under OUT/figures, each as .png and .svg
HELP = (
    "train k residual blocks and 2k plain conv-BN-ReLU layers (the same number of 3x3 convs) to reproduce their "
    "(non-negative) input; the relative error left against depth"
)
SLOW = True


def add_args(p) -> None:
    p.add_argument(
        "--max-layers", type=positive_int, default=10, help="largest k, in residual blocks (default %(default)s)"
    )
    p.add_argument("--steps", type=positive_int, default=400, help="training steps per stack (default %(default)s)")
    p.add_argument("--out", required=True, help="directory to write analyses/ and figures/ into")


def command(args) -> tuple[dict, Path]:
    return analyze(Path(args.out), args.max_layers, args.steps), Path(args.out)


def summary(r: dict) -> list[str]:
    f = finding(r)
    return [f"[{mark(f['holds'], f.get('testable', True))}] {f['claim']}: {f['text']}"]


def analyze(out: Path, max_k: int = 10, steps: int = 400, seed: int = 0) -> dict:
    """k = 1..max_k residual blocks against 2k plain layers: the same number of 3x3 convs."""
    files.check_outputs(Path(out), outputs("identity"))
    rows: dict[str, list[dict]] = {"plain": [], "residual": []}
    bar = progress_bar(4 * sum(range(1, max_k + 1)), "identity (convs trained)")  # a stack's cost grows with k
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small run slower on several threads, far slower on busy cores
    try:
        for k in range(1, max_k + 1):
            for kind, units in (("plain", 2 * k), ("residual", k)):
                err = identity_error(kind, units, steps=steps, seed=seed)
                rows[kind].append({"k": units, "convs": 2 * k, "error": err})
                bar.update(2 * k)
            logging.getLogger(__name__).info(
                f"{2 * k} convs: plain {rows['plain'][-1]['error']:.4f}, residual {rows['residual'][-1]['error']:.4f}"
            )
    finally:
        torch.set_num_threads(threads)
        bar.close()
    result = {**rows, "steps": steps, "unit": {"plain": "conv-BN-ReLU layers", "residual": "residual blocks"}}
    write_result(out, "identity", result)
    plot(result, Path(out) / "figures" / "identity")
    return result


@styled
def plot(result: dict, path: Path | None = None) -> Figure | list[Path]:
    from matplotlib.ticker import FuncFormatter

    fig, ax = subplots(figsize=(7.5, 4.8), layout="constrained")
    values = [max(r["error"], 1e-8) for kind in ("plain", "residual") for r in result[kind]]
    for kind, arch in (("plain", "plain"), ("residual", "resnet")):
        rows = result[kind]
        ax.plot(
            [r["convs"] for r in rows],
            [max(r["error"], 1e-8) for r in rows],
            color=style.colour(arch),
            marker="o",
            lw=2.2,
            label=f"{kind} ({result['unit'][kind]})",
        )
    if max(values) / min(values) > 20:  # orders of magnitude apart: a log axis, labelled in plain numbers
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.set_ylim(0, max(values) * 1.1)
    ax.set_xticks([r["convs"] for r in result["plain"]])
    ax.set_xlabel("3x3 convolutions in the stack (2k plain layers, k residual blocks)")
    ax.set_ylabel("relative error ‖f(x) − x‖² / ‖x‖²")
    ax.legend()
    style.title(fig, f"Learning the identity mapping (after {result.get('steps', '?')} steps of training)")
    return fig if path is None else save(fig, path)


def section(r: dict, exp_dir: Path) -> str:
    """The report's section from OUT/analyses/identity.json (r) and OUT/figures."""
    rows = [
        [str(p["convs"]), str(p["k"]), f"{p['error']:.2e}", str(q["k"]), f"{q['error']:.2e}"]
        for p, q in zip(r["plain"], r["residual"])
    ]
    return (
        "<h2>Learning the identity</h2>"
        + finding_html(finding(r))
        + figure(exp_dir, "identity", "identity error")
        + table(["3x3 convs", "plain layers", "plain error", "residual blocks", "residual error"], rows)
    )
