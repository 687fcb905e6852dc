"""A CPU training step's speed by memory layout (channels_last or contiguous) and with or
without torch.compile, side by side.

Measured as the CPU preset trains: one thread per process and two processes at once (one per
core), bare steps (forward + backward + SGD, batch 128) in the precision reslab resolves on this
CPU, each measurement a fresh pair of processes, the variants' order reversed every other round.
A compiled variant's compilation (its warm-up steps) is reported apart from its speed.

    python benchmarks/cpu_step.py                        # ResNet-20/56 at 16x16, 4 variants
    python benchmarks/cpu_step.py --sizes 16,32 --variants channels_last,contiguous
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("channels_last", "contiguous", "channels_last+compile", "contiguous+compile")


def one(net: str, size: int, variant: str, steps: int) -> tuple[float, float]:
    """Images/s of one process's bare steps, and its warm-up's seconds (run in a fresh process)."""
    import torch
    from fused_speed import BATCH, single_step, timed

    from reslab import accel
    from reslab.models import parse_net

    torch.set_num_threads(1)
    accel.keep_freed_memory()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    compile_mode = "default" if variant.endswith("+compile") else None
    channels_last = variant.startswith("channels_last")
    step = single_step(parse_net(net), cpu, accel.resolve_precision("auto", cpu), compile_mode, channels_last, size)
    return timed(step, cpu, BATCH, steps)


def pair(net: str, size: int, variant: str, steps: int) -> list[tuple[float, float]]:
    """Two processes at once (both cores busy, as in the preset's grid); each one's images/s and
    warm-up seconds."""
    cmd = [sys.executable, __file__, "--one", net, str(size), variant, "--steps", str(steps)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a measurement of {net} at {size}x{size} ({variant}) failed")
    return [tuple(map(float, o.strip().splitlines()[-1].split())) for o in outs]  # type: ignore[misc]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default="resnet-20,resnet-56")
    p.add_argument("--sizes", default="16", help="image sizes (the CPU preset trains at 16)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="of " + ", ".join(VARIANTS))
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is kept")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_step")
    p.add_argument("--one", nargs=3, metavar=("NET", "SIZE", "VARIANT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if unknown := set(a.variants.split(",")) - set(VARIANTS):
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if a.one:
        print(*one(a.one[0], int(a.one[1]), a.one[2], a.steps))
        return

    import statistics

    import torch

    from reslab import accel

    nets, sizes, variants = a.nets.split(","), [int(s) for s in a.sizes.split(",")], a.variants.split(",")
    rates: dict[str, list[float]] = {}
    warmups: dict[str, list[float]] = {}
    for r in range(a.rounds):
        for net in nets:
            for size in sizes:
                for variant in variants if r % 2 == 0 else variants[::-1]:
                    got = pair(net, size, variant, a.steps)
                    key = f"{net} {size} {variant}"
                    rates.setdefault(key, []).extend(g[0] for g in got)
                    warmups.setdefault(key, []).extend(g[1] for g in got)
                    shown = " + ".join(f"{g[0]:.0f}" for g in got)
                    print(f"round {r + 1}: {key}: {shown} img/s", flush=True)

    command = "python benchmarks/cpu_step.py " + " ".join(sys.argv[1:])
    lines = [
        "# A CPU training step by layout and compilation",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {accel.cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, precision "
        f"{accel.resolve_precision('auto', torch.device('cpu'))} (reslab's auto); "
        f"two processes at once, one thread each; batch 128; {a.steps} timed steps after 3 warm-up steps; "
        f"{a.rounds} rounds, the variants' order reversed every other round; medians over processes and rounds.",
        "",
        f"| net | image | variant | images/s of one process | against {variants[0]} | warm-up s (3 steps) |",
        "|---|---|---|---:|---:|---:|",
    ]
    table = []
    for net in nets:
        for size in sizes:
            base = statistics.median(rates[f"{net} {size} {variants[0]}"])
            for variant in variants:
                key = f"{net} {size} {variant}"
                ips, warm = statistics.median(rates[key]), statistics.median(warmups[key])
                table.append(dict(net=net, size=size, variant=variant, images_per_second=ips, warmup_s=warm))
                lines.append(f"| {net} | {size}x{size} | {variant} | {ips:.0f} | {ips / base:.2f}x | {warm:.1f} |")
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.with_suffix(".md").write_text("\n".join(lines) + "\n")
    record = dict(command=command, rates=rates, warmups=warmups, table=table)
    a.results.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
