"""GPU check: per-network speed alone and several networks at once on one GPU, a short real
training for accuracy, and the Figure-6 grid's time extrapolated from them.

    bash benchmarks/gpu_check.sh                    # on a GPU machine (no network needed)
    python benchmarks/gpu_check.py --smoke --out /tmp/g   # the same code path, tiny, on a CPU

Everything goes through reslab's own code: train() for one network, run_experiment() with
runs_per_gpu=K for K networks sharing the GPU (K processes), so what is measured is what
`reslab experiment --runs-per-gpu K` does. Throughput is read from the runs' metrics.csv (second
evaluation period, after cuDNN's autotuning and the first evaluation); the time per iteration
includes one evaluation of the test set per epoch, as in the real runs.

Phases, in order (the results are written after each, so a check cut short still reports; the
decisive ones first, since a GPU session has 15 minutes in all): each network alone, eager; each
network alone with its whole step as CUDA graphs (--cuda-graphs on); a short ResNet-20 run eager
and graphed in bf16, and eager in fp32, for accuracy; the whole grid at once, graphed, on the
CUDA streams of one process and then one process per network, its timeline scaled to 64k
iterations; host synchronisations per step (CUDA's sync debug
mode); speed.py's conventional loop against reslab's; K ResNet-56 processes at once. With --full
(and in --smoke): K networks fused into one module (benchmarks/fused.py), ResNet-20/56 through
torch.compile, and ResNet-56's bare step eager, compiled and as a CUDA graph.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from fused_speed import BATCH, fused_step, single_step, sync, timed
from fused_speed import measure as measure_fused
from fused_speed import table as fused_table
from speed import conventional_loop

from reslab import runs
from reslab.accel import resolve_device, resolve_precision
from reslab.config import TrainConfig
from reslab.data import load_dataset
from reslab.errors import one_line
from reslab.experiment import LocalBackend, grid, run_experiment
from reslab.models import parse_net
from reslab.train import PAPER_ITERATIONS, train

FIG6 = [
    "plain-20",
    "plain-32",
    "plain-44",
    "plain-56",
    "resnet-20",
    "resnet-32",
    "resnet-44",
    "resnet-56",
    "resnet-110",
]


@dataclasses.dataclass
class Sizes:
    nets: list
    concurrent_net: str
    ks: list
    epoch: int  # iterations per evaluation period (an epoch of CIFAR-10 at batch 128: 390)
    accuracy_iterations: int
    matmul_n: int
    compile_nets: list
    fused_nets: list
    fused_steps: int  # also the CUDA-graph phase's
    graph_net: str
    sync_iterations: int
    conventional_nets: list


GPU = Sizes(
    nets=FIG6,
    concurrent_net="resnet-56",
    ks=[2, 4, 8],
    epoch=390,
    accuracy_iterations=3200,
    matmul_n=8192,
    compile_nets=["resnet-20", "resnet-56"],
    fused_nets=["resnet-20", "resnet-56"],
    fused_steps=30,
    graph_net="resnet-56",
    sync_iterations=50,
    conventional_nets=["resnet-20", "resnet-56"],
)
SMOKE = Sizes(
    ["plain-8", "resnet-8"], "resnet-8", [2], 4, 8, 256, ["resnet-8"], ["resnet-8"], 2, "resnet-8", 4, ["resnet-8"]
)


def matmul_tflops(device: torch.device, n: int) -> float:
    dtype = torch.bfloat16
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 2 * n**3 * 10 / (time.perf_counter() - t) / 1e12


def base_config(dataset: str, sizes: Sizes, device: str) -> TrainConfig:
    return TrainConfig(
        dataset=dataset,
        iterations=2 * sizes.epoch,
        eval_every=sizes.epoch,
        device=device,
        augment="on",
        compile="off",  # measured separately, in compiled()
        cuda_graphs="off",  # the eager baseline; graphed() turns them on
    )


def steady(run_dir: Path) -> dict:
    """Images/s in the second evaluation period, and seconds per iteration including evaluation."""
    rows = runs.read_metrics(run_dir)
    a, b = rows[-2], rows[-1]
    return {
        "images_per_second": b["images_per_second"],
        "seconds_per_iteration": (b["seconds"] - a["seconds"]) / (b["iteration"] - a["iteration"]),
    }


def for_net(base: TrainConfig, net: str, **changes) -> TrainConfig:
    """`base` for the network named `net` ('resnet-56')."""
    c = parse_net(net)
    return dataclasses.replace(base, arch=c.arch, depth=c.depth, **changes)


def alone(base: TrainConfig, data, nets: list, tmp: Path, out: dict, save) -> dict:
    for net in nets:
        train(for_net(base, net), tmp / "alone" / net, data=data, progress=False)
        out[net] = steady(tmp / "alone" / net)
        print(f"alone {net}: {out[net]['images_per_second']:.0f} img/s", file=sys.stderr, flush=True)
        save()
    return out


def graphed(base: TrainConfig, data, nets: list, tmp: Path, out: dict, alone: dict, save) -> dict:
    """Each network alone again, its whole step recorded as CUDA graphs (--cuda-graphs; auto
    where no GPU is, so that --smoke runs the code path on a CPU)."""
    choice = "on" if torch.cuda.is_available() else "auto"
    for net in nets:
        try:
            train(for_net(base, net, cuda_graphs=choice), tmp / "graphed" / net, data=data, progress=False)
            out[net] = steady(tmp / "graphed" / net)
            out[net]["vs_eager"] = out[net]["images_per_second"] / alone[net]["images_per_second"]
            print(f"graphed {net}: {out[net]['images_per_second']:.0f} img/s", file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 - the report says what failed, the check goes on
            out[net] = {"error": one_line(e)}
        save()
    return out


def first_failure(outcomes: list) -> str | None:
    """The first run of an experiment that did not finish, in one line; None when all did."""
    for o in outcomes:
        if o.state != "finished":
            return f"{o.name}: {o.state}: {o.message}"
    return None


def concurrent(base: TrainConfig, net: str, ks: list, tmp: Path, out: dict, save) -> dict:
    """K copies of `net` (seeds 0..K-1) trained at once by `reslab experiment --runs-per-gpu K`."""
    c = parse_net(net)
    for k in ks:
        exp = tmp / f"concurrent-{k}"
        t = time.perf_counter()
        outcomes = run_experiment(exp, grid(base, [c.arch], [c.depth], list(range(k))), LocalBackend(k, k))
        wall = time.perf_counter() - t
        if bad := first_failure(outcomes):
            out[k] = {"error": bad}
            save()
            continue
        each = [steady(exp / o.name) for o in outcomes]
        out[k] = {
            "aggregate_images_per_second": sum(e["images_per_second"] for e in each),
            "per_run_images_per_second": [e["images_per_second"] for e in each],
            "seconds_per_iteration": max(e["seconds_per_iteration"] for e in each),
            "wall_seconds": wall,
        }
        print(f"{k} at once: {out[k]['aggregate_images_per_second']:.0f} img/s together", file=sys.stderr, flush=True)
        save()
    return out


def all_at_once(base: TrainConfig, nets: list, tmp: Path, out: dict, save, share: str = "processes") -> dict:
    """The whole grid at once (`reslab experiment --runs-per-gpu N --share-gpu SHARE` with N the
    grid's size), each run 2 epochs with its step as CUDA graphs: one process per network, or
    (streams) every network on a thread of one process, each on its own CUDA stream. All start
    together and the shallow ones finish first, as in a full-length grid, so the paper-length time
    is this timeline scaled: each run's own seconds times 64k over its iterations, plus the
    start-up, measured once."""
    exp = tmp / f"all-at-once-{share}"
    graphs = "on" if torch.cuda.is_available() else "auto"
    cells = [for_net(base, net, cuda_graphs=graphs) for net in nets]
    t = time.perf_counter()
    jobs = len(cells) if share == "processes" else 1
    outcomes = run_experiment(exp, cells, LocalBackend(jobs, len(cells), share))
    wall = time.perf_counter() - t
    if bad := first_failure(outcomes):
        out["error"] = bad
        save()
        return out
    for net, o in zip(nets, outcomes):
        last = runs.read_metrics(exp / o.name)[-1]
        out[net] = {"seconds": last["seconds"], "iterations": last["iteration"]}
    longest = max(r["seconds"] for r in out.values())
    scaled = max(r["seconds"] * PAPER_ITERATIONS / r["iterations"] for r in out.values())
    out.update(wall_seconds=wall, start_up_seconds=wall - longest, paper_length_seconds=wall - longest + scaled)
    print(
        f"all {len(nets)} at once ({share}): {wall:.0f} s; paper length {out['paper_length_seconds'] / 60:.1f} min",
        file=sys.stderr,
        flush=True,
    )
    save()
    return out


def conventional(data, nets: list, device: torch.device, out: dict, save) -> dict:
    """The hand-written loop of benchmarks/speed.py on this GPU: per-sample transforms in 2
    DataLoader workers (as the PyTorch CIFAR tutorial has it), pinned memory, fp32, cuDNN's
    autotuner, the loss read back every step, the test set evaluated every epoch."""
    for net in nets:
        c = parse_net(net)
        try:
            out[net] = {"seconds_per_iteration": conventional_loop(c.arch, c.depth, data, device, 2, workers=2)}
        except Exception as e:  # noqa: BLE001 - a failure is a result here
            out[net] = {"error": one_line(e)}
        print(f"conventional {net}: {out[net]}", file=sys.stderr, flush=True)
        save()
    return out


def fused(nets: list, ks: list, steps: int, device: torch.device, out: dict, save) -> dict:
    """K networks as one module (benchmarks/fused.py) against one alone, bare steps."""
    try:
        out.update(measure_fused(nets, ks, device, steps, log=lambda m: print(m, file=sys.stderr, flush=True)))
    except Exception as e:  # noqa: BLE001 - a failure here is a result, not a reason to lose the rest
        out["error"] = one_line(e)
    save()
    return out


def host_syncs(base: TrainConfig, data, iterations: int, tmp: Path, out: dict, save) -> dict:
    """Host synchronisations per training step, counted by CUDA's sync debug mode: the same
    ResNet-20 run for N and for 2N iterations (one evaluation and checkpoint each, at the end);
    the difference over N is what each step costs."""
    if not torch.cuda.is_available():
        out["skipped"] = "CUDA only"
        save()
        return out
    counts = {}
    try:
        for n in (iterations, 2 * iterations):
            cfg = dataclasses.replace(base, arch="resnet", depth=20, iterations=n, eval_every=n, warmup="off")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    train(cfg, tmp / f"syncs-{n}", data=data, progress=False)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            counts[n] = sum("synchronizing" in str(w.message) for w in caught)
        out.update(
            counts={str(n): c for n, c in counts.items()},
            per_step=(counts[2 * iterations] - counts[iterations]) / iterations,
        )
    except Exception as e:  # noqa: BLE001 - a failure is a result here
        out["error"] = one_line(e)
    print(f"host syncs: {out}", file=sys.stderr, flush=True)
    save()
    return out


def accuracy(base: TrainConfig, data, iterations: int, tmp: Path, out: dict, save) -> dict:
    """ResNet-20, a short real run of the paper's recipe (drops at 50% and 75%): eager and graphed
    in reslab's default precision (bf16 autocast on GPUs), and eager in fp32. Graphed and eager
    must agree within seed noise."""
    graphs = "on" if torch.cuda.is_available() else "auto"
    for name, precision, cuda_graphs in (
        ("auto", "auto", "off"),
        ("auto graphed", "auto", graphs),
        ("fp32", "fp32", "off"),
    ):
        cfg = dataclasses.replace(
            base,
            arch="resnet",
            depth=20,
            iterations=iterations,
            eval_every=None,
            precision=precision,
            cuda_graphs=cuda_graphs,
        )
        try:
            row = train(cfg, tmp / f"accuracy-{name.replace(' ', '-')}", data=data, progress=False)
        except Exception as e:  # noqa: BLE001
            out[name] = {"error": one_line(e)}
            save()
            continue
        out[name] = {"train_error": row["train_error"], "test_error": row["test_error"], "seconds": row["seconds"]}
        print(f"accuracy {name}: test error {row['test_error']:.2%}", file=sys.stderr, flush=True)
        save()
    return out


def compiled(base: TrainConfig, data, nets: list, tmp: Path, out: dict, alone: dict, save) -> dict:
    """The same networks through torch.compile (what --compile auto does for runs of 4k+ iterations):
    steady speed against eager, and the first period's extra seconds, mostly compilation."""
    for net in nets:
        cfg = for_net(base, net, compile="on")
        try:
            train(cfg, tmp / "compiled" / net, data=data, progress=False)
        except Exception as e:  # noqa: BLE001 - a failed compile is a result here, not a crash
            out[net] = {"error": one_line(e)}
            save()
            continue
        first = lambda d: runs.read_metrics(d)[0]["seconds"]  # noqa: E731
        out[net] = {
            **steady(tmp / "compiled" / net),
            "first_period_extra_seconds": first(tmp / "compiled" / net) - first(tmp / "alone" / net),
        }
        gain = out[net]["images_per_second"] / alone[net]["images_per_second"]
        print(f"compiled {net}: {gain:.2f}x eager", file=sys.stderr, flush=True)
        save()
    return out


def autotuned(step):
    """`step` with cuDNN's autotuner on (torch.backends.cudnn.benchmark), and off again after."""

    def run():
        torch.backends.cudnn.benchmark = True
        try:
            step()
        finally:
            torch.backends.cudnn.benchmark = False

    return run


def graphs(net: str, ks: list, steps: int, device: torch.device, out: dict, save) -> dict:
    """One network's bare step eager (with cuDNN's autotuner off, reslab's setting, and on),
    compiled, and compiled with CUDA graphs (torch.compile's reduce-overhead mode; on a CPU it
    compiles as the default mode): whether the autotuner and the graphs pay, which reslab does not
    use yet. Then the most networks of the fused phase, compiled: its images/s count all K."""
    config, precision = parse_net(net), resolve_precision("auto", device)
    k = max(ks)
    variants = {
        "eager": lambda: (single_step(config, device, precision), BATCH),
        # reslab leaves cuDNN's autotuner off; the conventional loop above turns it on, as many do.
        "eager, cuDNN autotuner": lambda: (autotuned(single_step(config, device, precision)), BATCH),
        "default": lambda: (single_step(config, device, precision, "default"), BATCH),
        "reduce-overhead": lambda: (single_step(config, device, precision, "reduce-overhead"), BATCH),
        # Last, as it may not be reached in the time: whether compiling removes what vmap costs
        # eagerly (it dispatches every operation through functorch).
        f"{k} fused, default": lambda: (fused_step(config, k, device, precision, True, "default"), k * BATCH),
    }
    for name, make in variants.items():
        try:
            step, images = make()
            images_per_second, warmup = timed(step, device, images, steps)
            out[name] = {"images_per_second": images_per_second, "warmup_seconds": warmup}
        except Exception as e:  # noqa: BLE001 - a failure is a result here
            out[name] = {"error": one_line(e)}
        print(f"{net} bare step, {name}: {out[name]}", file=sys.stderr, flush=True)
        save()
    return out


def makespan(durations: list, slots: int) -> float:
    """Longest-first list scheduling of the grid's runs on `slots` concurrent places."""
    ends = [0.0] * slots
    for d in sorted(durations, reverse=True):
        i = ends.index(min(ends))
        ends[i] += d
    return max(ends)


def extrapolate(nets: list, solo: dict, conc: dict, reference: str) -> dict:
    """The full grid (each net PAPER_ITERATIONS iterations) one at a time, and K at a time: each
    run then takes its time alone times the slowdown measured for `reference` at K."""
    full = {net: PAPER_ITERATIONS * solo[net]["seconds_per_iteration"] for net in nets}
    out = {"one_at_a_time": sum(full.values())}
    for k, c in conc.items():
        if "error" in c:
            continue
        slowdown = c["seconds_per_iteration"] / solo[reference]["seconds_per_iteration"]
        out[f"{k}_at_a_time"] = makespan([d * slowdown for d in full.values()], k)
    return out


def decision(result: dict) -> list[str]:
    """K processes against K fused networks, for the network both phases measured."""
    ref = result["concurrent_net"]
    fused_row = result["fused"].get(ref)
    if not fused_row or ref not in result["alone"]:
        return []
    lines = ["", f"{ref}, K networks at once, throughput against one alone:"]
    for k, c in result["concurrent"].items():
        if "error" in c or k not in fused_row["fused"]:
            continue
        procs = c["aggregate_images_per_second"] / result["alone"][ref]["images_per_second"]
        fused_gain = max(fused_row["fused"][k].values()) / fused_row["single"]
        lines.append(f"- K={k}: {procs:.2f}x as {k} processes (full loop), {fused_gain:.2f}x fused (bare steps)")
    return lines


def all_at_once_lines(a: dict, how: str = "one process per network") -> list[str]:
    if not a:
        return []
    head = ["", f"## The whole grid at once, {how}, steps as CUDA graphs (2 epochs each)", ""]
    if "error" in a:
        return [*head, f"failed: {a['error']}"]
    nets = [k for k, v in a.items() if isinstance(v, dict)]
    return [
        *head,
        "| net | seconds training | iterations | scaled to 64k iterations |",
        "|---|---|---|---|",
        *(
            f"| {n} | {a[n]['seconds']:.1f} | {a[n]['iterations']:.0f} | "
            f"{a[n]['seconds'] * PAPER_ITERATIONS / a[n]['iterations'] / 60:.1f} min |"
            for n in nets
        ),
        "",
        f"Wall time {a['wall_seconds']:.0f} s, of which {a['start_up_seconds']:.0f} s start-up (processes, data, "
        f"models). The shallow runs finish first here as in a full-length grid, so the paper-length grid is this "
        f"timeline scaled: **{a['paper_length_seconds'] / 60:.1f} min** for all {len(nets)} networks x 64k "
        "iterations (the target is under 10).",
    ]


def section(title: str, columns: list) -> list[str]:
    """A report section's heading and its table's header."""
    return ["", f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def conventional_lines(result: dict) -> list[str]:
    conv = result["conventional"]
    if not conv:
        return []
    lines = section(
        "reslab against a conventional loop (DataLoader, per-sample transforms, fp32), each alone",
        ["net", "conventional ms per iteration", "reslab ms per iteration", "reslab's speed"],
    )
    for net, c in conv.items():
        if "error" in c:
            lines.append(f"| {net} | failed: {c['error']} | | |")
            continue
        ours = result["alone"][net]["seconds_per_iteration"]
        lines.append(
            f"| {net} | {1000 * c['seconds_per_iteration']:.2f} | {1000 * ours:.2f} | "
            f"{c['seconds_per_iteration'] / ours:.2f}x |"
        )
    return [*lines, "", "Both per iteration of the second epoch, its evaluation of the test set included."]


def graph_lines(result: dict) -> list[str]:
    g = result["graphs"]
    if not g:
        return []
    eager = g.get("eager", {}).get("images_per_second")
    lines = section(
        f"{result['graph_net']} bare steps: eager (cuDNN's autotuner off, reslab's setting, and on), "
        "compiled, compiled with CUDA graphs (reduce-overhead), K fused and compiled (images/s of all K)",
        ["step", "images/s", "vs eager", "first 3 steps' seconds (compilation)"],
    )
    for mode, r in g.items():
        if "error" in r:
            lines.append(f"| {mode} | failed: {r['error']} | | |")
        else:
            gain = f"{r['images_per_second'] / eager:.2f}x" if eager else "-"
            lines.append(f"| {mode} | {r['images_per_second']:.0f} | {gain} | {r['warmup_seconds']:.1f} |")
    return lines


def graphed_lines(result: dict) -> list[str]:
    """The decisive table first: each network with its step as CUDA graphs against eager."""
    if not result["graphed"]:
        return []
    lines = [
        "## Each network alone, the whole step as CUDA graphs (reslab train --cuda-graphs on)",
        "",
        "| net | images/s | ms per iteration (incl. evaluation) | vs eager | 64k iterations |",
        "|---|---|---|---|---|",
    ]
    for net, r in result["graphed"].items():
        if "error" in r:
            lines.append(f"| {net} | failed: {r['error']} | | | |")
            continue
        lines.append(
            f"| {net} | {r['images_per_second']:.0f} | {1000 * r['seconds_per_iteration']:.2f} | {r['vs_eager']:.2f}x"
            f" | {PAPER_ITERATIONS * r['seconds_per_iteration'] / 60:.1f} min |"
        )
    done = [r for r in result["graphed"].values() if "error" not in r]
    if len(done) == len(result["alone"]) == len(FIG6):
        serial = sum(PAPER_ITERATIONS * r["seconds_per_iteration"] for r in done)
        lines += [
            "",
            f"The Figure-6 grid one network after another, graphed: {serial / 60:.1f} min (target: under 10).",
        ]
    return lines + [""]


def report(result: dict) -> str:
    lines = [
        "# GPU check",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Device: {result['device']}; torch {result['torch']}; data: {result['dataset']}; "
        f"bf16 matmul {result['matmul_tflops']:.3g} TFLOP/s.",
        "",
        *graphed_lines(result),
        "## Each network alone (reslab train, default precision, eager: --cuda-graphs off)",
        "",
        "| net | images/s | ms per iteration (incl. evaluation) | 64k iterations |",
        "|---|---|---|---|",
    ]
    for net, r in result["alone"].items():
        lines.append(
            f"| {net} | {r['images_per_second']:.0f} | {1000 * r['seconds_per_iteration']:.2f} | "
            f"{PAPER_ITERATIONS * r['seconds_per_iteration'] / 60:.1f} min |"
        )
    ref = result["concurrent_net"]
    if ref not in result["alone"]:
        return "\n".join([*lines, "", "(stopped here)", ""])
    lines += [
        "",
        f"## Several {ref} at once on one GPU (reslab experiment --runs-per-gpu K)",
        "",
        "| K | images/s together | per run | vs alone |",
        "|---|---|---|---|",
        f"| 1 | {result['alone'][ref]['images_per_second']:.0f} | - | 1.00x |",
    ]
    for k, c in result["concurrent"].items():
        if "error" in c:
            lines.append(f"| {k} | failed: {c['error']} | | |")
            continue
        gain = c["aggregate_images_per_second"] / result["alone"][ref]["images_per_second"]
        per = ", ".join(f"{v:.0f}" for v in c["per_run_images_per_second"])
        lines.append(f"| {k} | {c['aggregate_images_per_second']:.0f} | {per} | {gain:.2f}x |")
    lines += all_at_once_lines(result["grid_streams"], "every network on a CUDA stream of one process")
    lines += all_at_once_lines(result["all_at_once"])
    lines += conventional_lines(result)
    if result["fused"]:
        lines += [
            "",
            "## K networks fused into one module (benchmarks/fused.py), bare steps, images/s",
            "",
            *([f"failed: {result['fused']['error']}"] if "error" in result["fused"] else fused_table(result["fused"])),
            *decision(result),
        ]
    syncs = result["host_syncs"]
    if "per_step" in syncs:
        lines += [
            "",
            f"Host synchronisations per training step (CUDA sync debug mode, ResNet-20): {syncs['per_step']:.2f} "
            f"({syncs['counts']} in runs of N and 2N iterations, each with one evaluation).",
        ]
    elif "error" in syncs:
        lines += ["", f"Host synchronisations per step: not counted ({syncs['error']})."]
    acc, at_once = result["accuracy"], result["all_at_once"]
    lines += [
        "",
        f"## Accuracy: ResNet-20, {result['accuracy_iterations']} iterations of the paper's recipe",
        "",
        "| precision | training error | test error | seconds |",
        "|---|---|---|---|",
        *(
            f"| {p} | failed: {a['error']} | | |"
            if "error" in a
            else f"| {p} | {100 * a['train_error']:.2f}% | {100 * a['test_error']:.2f}% | {a['seconds']:.0f} |"
            for p, a in acc.items()
        ),
        "",
        "## torch.compile against eager (each network alone)",
        "",
        "| net | images/s compiled | vs eager | first period's extra seconds (compilation) |",
        "|---|---|---|---|",
        *(
            f"| {net} | failed: {c['error']} | | |"
            if "error" in c
            else f"| {net} | {c['images_per_second']:.0f} | "
            f"{c['images_per_second'] / result['alone'][net]['images_per_second']:.2f}x | "
            f"{c['first_period_extra_seconds']:.0f} |"
            for net, c in result["compiled"].items()
        ),
        *graph_lines(result),
        "",
        f"## The grid ({len(result['alone'])} networks x 64k iterations, one seed, eager), extrapolated",
        "",
        *(f"- {k.replace('_', ' ')}: {v / 60:.1f} min" for k, v in result["extrapolated_seconds"].items()),
        *(
            [f"- all at once, measured and scaled (above): {at_once['paper_length_seconds'] / 60:.1f} min"]
            if "paper_length_seconds" in at_once
            else []
        ),
        "",
        f"Target: under 15 min. Whole check: {result['check_seconds']:.0f} s"
        + ("." if result["complete"] else " (stopped before the end: the numbers above are what it got to)."),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic", help="imagefolder:PATH of CIFAR-10 (default: synthetic images)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check"), help="results path, no suffix")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, any device: checks the code path")
    p.add_argument("--full", action="store_true", help="also the fused, torch.compile and bare-graph phases")
    args = p.parse_args()
    t0 = time.perf_counter()
    sizes = SMOKE if args.smoke else GPU
    device = resolve_device("auto")
    if device.type != "cuda" and not args.smoke:
        print("gpu_check: no GPU is visible; use --smoke to check the code path on a CPU.", file=sys.stderr)
        return 2
    if args.data == "synthetic" and not args.smoke:
        print("gpu_check: give --data imagefolder:PATH of CIFAR-10 (gpu_check.sh unpacks it).", file=sys.stderr)
        return 2
    data = load_dataset(args.data, None, False)  # the concurrent runs' processes load the same
    base = base_config(args.data, sizes, "auto")
    result = {
        "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dataset": args.data,
        "matmul_tflops": matmul_tflops(device, sizes.matmul_n),
        "alone": {},
        "concurrent_net": sizes.concurrent_net,
        "concurrent": {},
        "all_at_once": {},
        "conventional": {},
        "accuracy_iterations": sizes.accuracy_iterations,
        "accuracy": {},
        "fused": {},
        "compiled": {},
        "graph_net": sizes.graph_net,
        "graphs": {},
        "graphed": {},
        "grid_streams": {},
        "host_syncs": {},
        "extrapolated_seconds": {},
        "complete": False,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> str:
        """Write what is measured so far: a check cut short by its time limit still reports."""
        if len(result["alone"]) == len(sizes.nets):
            result["extrapolated_seconds"] = extrapolate(
                sizes.nets, result["alone"], result["concurrent"], sizes.concurrent_net
            )
        result["check_seconds"] = time.perf_counter() - t0
        text = report(result)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        return text

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The decisive phases first (issue 14): graphed against eager per network, accuracy eager
        # against graphed; then the grid at once, host syncs and the conventional loop. The older
        # phases (fused, torch.compile, bare graphs) only with --full: they do not fit 6 minutes.
        alone(base, data, sizes.nets, tmp, result["alone"], save)
        graphed(base, data, sizes.nets, tmp, result["graphed"], result["alone"], save)
        accuracy(base, data, sizes.accuracy_iterations, tmp, result["accuracy"], save)
        all_at_once(base, sizes.nets, tmp, result["grid_streams"], save, share="streams")
        all_at_once(base, sizes.nets, tmp, result["all_at_once"], save)
        host_syncs(base, data, sizes.sync_iterations, tmp, result["host_syncs"], save)
        conventional(data, sizes.conventional_nets, device, result["conventional"], save)
        concurrent(base, sizes.concurrent_net, sizes.ks, tmp, result["concurrent"], save)
        if args.full or args.smoke:
            fused(sizes.fused_nets, sizes.ks, sizes.fused_steps, device, result["fused"], save)
            compiled(base, data, sizes.compile_nets, tmp, result["compiled"], result["alone"], save)
            graphs(sizes.graph_net, sizes.ks, sizes.fused_steps, device, result["graphs"], save)
    result["complete"] = True
    print(save())
    return 0


if __name__ == "__main__":
    sys.exit(main())
