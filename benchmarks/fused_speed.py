"""K networks fused into one module (fused.py) against one network alone: training images/s
of the bare step (forward + backward + SGD on one fixed batch), side by side in one process.

    python benchmarks/fused_speed.py [--nets resnet-20,resnet-56] [--ks 2,4] [--steps 10]

Both run as reslab trains (its default precision for the device, bf16 autocast where native);
the single network in channels_last, the fused ones in both layouts (the fused input laid out so
that the grouped convolution sees channels_last, or plain contiguous). The fused rate counts the
images of all K networks: above 1.0x the single network's rate, fusing K networks trains them
sooner than training them one after another. benchmarks/gpu_check.sh runs the same measurement
on a GPU, beside K processes sharing it.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from fused import FusedNets, fused_loss

from reslab import accel
from reslab.accel import autocast, resolve_device, resolve_precision
from reslab.errors import UserError
from reslab.models import ModelConfig, build_model, parse_net

BATCH = 128
ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device, images: int, steps: int) -> tuple[float, float]:
    """Images/s over `steps` steps after 3 warm-up steps (cuDNN's autotuning, allocations,
    compilation), and the warm-up's seconds."""
    t = time.perf_counter()
    for _ in range(3):
        step()
    sync(device)
    warmup = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * images / (time.perf_counter() - t), warmup


def rate(step, device: torch.device, images: int, steps: int) -> float:
    return timed(step, device, images, steps)[0]


def single_step(
    config: ModelConfig,
    device: torch.device,
    precision: str,
    compile_mode: str | None = None,
    channels_last=True,
    size: int = 32,
):
    """One network's training step on one fixed batch of size x size images, as reslab runs it
    (channels_last); through torch.compile in `compile_mode` ('default', or 'reduce-overhead' for
    CUDA graphs) when given."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(config).to(device, memory_format=fmt)
    net = model if compile_mode is None else torch.compile(model, mode=compile_mode, dynamic=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(BATCH, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (BATCH,), device=device)

    def step():
        with autocast(device, precision):
            out = net(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def single_rate(config: ModelConfig, device: torch.device, precision: str, steps: int) -> float:
    return rate(single_step(config, device, precision), device, BATCH, steps)


def fused_step(
    config: ModelConfig, k: int, device: torch.device, precision: str, channels_last: bool, compile_mode=None
):
    """K networks' training step as one fused module; through torch.compile when `compile_mode`."""
    fused = FusedNets([build_model(config) for _ in range(k)]).to(device)
    net = fused if compile_mode is None else torch.compile(fused, mode=compile_mode, dynamic=False)
    opt = torch.optim.SGD(fused.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    if channels_last:
        # (K, N, C, H, W) stored as (N, H, W, K, C): vmap's grouped convolution then sees its
        # (N, K*C, H, W) input as a channels_last view, without a copy.
        x = torch.randn(BATCH, 32, 32, k, 3, device=device).permute(3, 0, 4, 1, 2)
    else:
        x = torch.randn(k, BATCH, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (k, BATCH), device=device)

    def step():
        with autocast(device, precision):
            out = net(x)
        loss, _ = fused_loss(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def fused_rate(
    config: ModelConfig, k: int, device: torch.device, precision: str, steps: int, channels_last: bool
) -> float:
    return rate(fused_step(config, k, device, precision, channels_last), device, k * BATCH, steps)


def measure(nets: list[str], ks: list[int], device: torch.device, steps: int, log=print) -> dict:
    """{net: {"single": img/s, "fused": {K: {"contiguous": img/s, "channels_last": img/s}}}}."""
    precision = resolve_precision("auto", device)
    out = {}
    for net in nets:
        config = parse_net(net)
        row = {"single": single_rate(config, device, precision, steps), "fused": {}}
        for k in ks:
            row["fused"][k] = {
                layout: fused_rate(config, k, device, precision, steps, layout == "channels_last")
                for layout in ("channels_last", "contiguous")
            }
            best = max(row["fused"][k].values())
            log(f"{net}: {k} fused {best:.0f} img/s together, one alone {row['single']:.0f} img/s")
        out[net] = row
    return out


def table(result: dict) -> list[str]:
    lines = [
        "| net | one alone | K | K fused, together (channels_last) | (contiguous) | best fused / one alone |",
        "|---|---|---|---|---|---|",
    ]
    for net, row in result.items():
        for k, f in row["fused"].items():
            cl, co = f["channels_last"], f["contiguous"]
            lines.append(
                f"| {net} | {row['single']:.0f} | {k} | {cl:.0f} | {co:.0f} | {max(cl, co) / row['single']:.2f}x |"
            )
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default="resnet-20,resnet-56")
    p.add_argument("--ks", default="2,4")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--results", type=Path, help="markdown file (default benchmarks/results/fused_<device>.md)")
    args = p.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu":
        accel.keep_freed_memory()  # as reslab's CPU runs do
    try:
        nets = args.nets.split(",")
        for net in nets:
            parse_net(net)
        if not all(k.isdigit() and int(k) >= 2 for k in args.ks.split(",")):
            raise UserError(f"--ks takes numbers of networks to fuse, 2 or more, like 2,4 (not '{args.ks}').")
        ks = [int(k) for k in args.ks.split(",")]
    except UserError as e:
        print(f"fused_speed: {e}", file=sys.stderr)
        return 2
    result = measure(nets, ks, device, args.steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    lines = [
        f"# Fused networks against one network alone ({device.type}, images/s, batch 128 per network)",
        "",
        f"Command: `python benchmarks/fused_speed.py {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {name}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"precision {resolve_precision('auto', device)}; bare steps, {args.steps} timed after 3, in one process.",
        "",
        *table(result),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    path = args.results or ROOT / "benchmarks" / "results" / f"fused_{device.type}.md"
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
