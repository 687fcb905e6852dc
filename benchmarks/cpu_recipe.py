"""The study behind `--preset cpu`: which recipe shows the paper's degradation result on real
CIFAR-10 within an hour on a 2-core CPU.

Trains each candidate recipe's networks one after another (one process, all cores), on seeds
that the published preset results do not use (100, 101, ...), and appends every finished run to
benchmarks/results/cpu_recipe.json as it comes: final training and test error, wall time, the
load average beside it, and the training-error curve, from which the crossovers are computed
(the iteration from which the deeper net's training error stays below the shallower one's).

    python benchmarks/cpu_recipe.py --recipes cosine16-full,cosine16-10k --nets resnet-20,resnet-56 --seeds 100
    python benchmarks/cpu_recipe.py --table     # the markdown table of what was measured so far
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from degradation_cifar10 import add_cifar_options, cifar_folder

from reslab.config import TrainConfig
from reslab.summary import crossover

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_recipe.json"

# Every candidate: the same recipe for plain and residual nets. Common to all: SGD, momentum 0.9,
# weight decay 1e-4, lr 0.1, batch 128, He init, pad-crop-flip, the paper's architectures.
PAPER_SHORT = dict(schedule="step")  # drops at 50% and 75%, no warm-up: the paper's recipe, shortened
RECIPES = {
    "paper32-1000": dict(PAPER_SHORT, iterations=1000),
    "cosine32-1000": dict(schedule="cosine", linear_warmup=200, iterations=1000),
    "cosine16-full": dict(schedule="cosine", linear_warmup=200, iterations=2000, image_size=16),
    "cosine16-10k": dict(schedule="cosine", linear_warmup=200, iterations=2000, image_size=16, subset=10000),
    "cosine16-full-4000": dict(schedule="cosine", linear_warmup=200, iterations=4000, image_size=16),
    "cosine16-5k": dict(schedule="cosine", linear_warmup=200, iterations=2000, image_size=16, subset=5000),
    "paper16-full": dict(PAPER_SHORT, iterations=2000, image_size=16),
    "cosine16-10k-torchinit": dict(
        schedule="cosine", linear_warmup=200, iterations=2000, image_size=16, subset=10000, init="torch"
    ),
    "cosine16-full-torchinit": dict(schedule="cosine", linear_warmup=200, iterations=2000, image_size=16, init="torch"),
    "cosine16-10k-lr0.02": dict(
        schedule="cosine", linear_warmup=200, iterations=2000, image_size=16, subset=10000, lr=0.02, warmup_lr=0.002
    ),
    "cosine16-1000": dict(schedule="cosine", linear_warmup=200, iterations=1000, image_size=16),
    "cosine16-1000-gamma0.1": dict(
        schedule="cosine", linear_warmup=200, iterations=1000, image_size=16, block_gamma=0.1
    ),
    "cosine16-1000-gamma0.3": dict(
        schedule="cosine", linear_warmup=200, iterations=1000, image_size=16, block_gamma=0.3
    ),
    "cosine16-1000-bs64": dict(
        schedule="cosine", linear_warmup=400, iterations=2000, image_size=16, batch_size=64, lr=0.05, warmup_lr=0.005
    ),
    "cosine16-full-gamma0.3": dict(
        schedule="cosine", linear_warmup=200, iterations=2000, image_size=16, block_gamma=0.3
    ),
    "cosine16-10k-lr0.05": dict(
        schedule="cosine", linear_warmup=200, iterations=2000, image_size=16, subset=10000, lr=0.05, warmup_lr=0.005
    ),
}
HEADER = """# The study behind `--preset cpu`

Command: `python benchmarks/cpu_recipe.py --recipes R --nets N --seeds S` for the runs below (one
process, both cores, one run at a time), then `python benchmarks/cpu_recipe.py --table` for this
file. Real CIFAR-10 (the JPEG copy, train/test image folders), SGD with momentum 0.9, weight decay
1e-4, lr 0.1, batch 128, He init, pad-crop-flip, for every net; training error is the running error
of the last 100 iterations (train mode, augmented), test error on 2,000 class-balanced test images.
Seeds 100 and up: the published preset results use seeds 0 and 1, which chose nothing. Their rows
(`preset cpu (published: seeds 0, 1)`, added with `--add-experiment`) come from `reslab experiment
degradation --preset cpu`, which trains two networks at a time, one thread each: their wall times
are per run (`cpu_preset_cifar10_jpeg.md` has the whole experiment's). The rows `preset cpu before
--block-gamma 0.3` are the same command before that setting joined the preset (3,176 s in all).
The first ResNet-56 run of `cosine16-full` shared the CPU with two demo runs for part of its time,
and both seed-101 runs shared it with test runs (load average near 3): their wall times are not a
quiet machine's. Runs stopped early were stopped by hand once they were clearly behind; their
curves up to then are kept.

The rows `cosine16-full-4000` are the preset's recipe at twice its length (`reslab experiment
degradation --preset cpu --dataset imagefolder:PATH --archs resnet --seeds 2 --seed 102
--iterations 4000`, two networks at a time, one thread each; the whole experiment took 4,010 s,
load average near 2 from its own two processes, with light editing beside it): ResNet-20 and
ResNet-56 only, on seeds 102 and 103, which chose nothing.

Recipes: `paper16-*`: the paper's step schedule (lr / 10 at 50% and 75%), no warm-up;
`cosine16-*`: lr rising linearly from 0.01 to 0.1 over 200 iterations, then a cosine to 0; `16`:
images area-averaged to 16x16; `full`: all 50,000 training images, `10k`/`5k`: a class-balanced
subset; `-torchinit`: PyTorch's default conv init (`--init torch`); `-lr0.02`: peak lr 0.02 (its
ramp from 0.002); `-1000`: 1,000 iterations instead of 2,000 (a quicker screen, on seed 104);
`-gammaG`: every block's last BN starts with scale G instead of 1 (`--block-gamma G`, plain and
residual blocks alike); `-bs64`: batch 64 at lr 0.05 (ramp from 0.005 over 400 iterations) for
2,000 iterations, the same images seen as 1,000 of batch 128.

The screen on seed 104 ran two networks at a time, one thread each (load average near 2).

What chose the preset's `--block-gamma 0.3`: at 1,000 iterations on seed 104 it turned ResNet-56
from 4.1 points behind ResNet-20 (43.3% against 39.2%) to 1.7 points ahead (38.4% against 40.1%);
0.1 also put it ahead (40.0% against 42.0%) but left both nets higher; batch 64 was no help.
At the preset's 2,000 iterations (`cosine16-full-gamma0.3`, seeds 104 and 105, two runs at a
time) ResNet-56 ended 1.3 points ahead on the mean (29.7% against 30.9%; without it, on seeds 100
and 101, 1.8 points behind), and below ResNet-20 at every evaluation of both seeds.

"""
EVAL_EVERY = 100
TEST_IMAGES = 2000


def machine() -> str:
    import torch

    from reslab.accel import cpu_model, resolve_precision

    cpu = cpu_model()
    precision = resolve_precision("auto", torch.device("cpu"))
    return f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, precision {precision} (reslab's auto)."


def load_results() -> list[dict]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else []


def save_results(rows: list[dict]) -> None:
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, RESULTS)


def run_dir_of(recipe: str, net: str, seed: int) -> Path:
    """Kept outside the repository, so that a run stopped early leaves its curve behind."""
    return Path(tempfile.gettempdir()) / "reslab-cpu-recipe" / f"{recipe}-{net}-seed{seed}"


def row(recipe: str, net: str, seed: int, config: dict, metrics: list[dict], **extra) -> dict:
    """One run as a row of the results: its recipe, final errors and training-error curve."""
    last = metrics[-1]
    return {
        "recipe": recipe, "net": net, "seed": seed, "config": config,
        "train_error": last["train_error"], "test_error": last["test_error"], "train_loss": last["train_loss"],
        **extra, "curve": [[m["iteration"], m["train_error"]] for m in metrics],
    }  # fmt: skip


def run_one(recipe: str, net: str, seed: int, dataset: str) -> dict:
    from reslab.runs import read_metrics
    from reslab.train import train

    arch, depth = net.rsplit("-", 1)
    cfg = TrainConfig(
        arch=arch, depth=int(depth), dataset=dataset, seed=seed, eval_every=EVAL_EVERY, test_subset=TEST_IMAGES,
        **RECIPES[recipe],
    )  # fmt: skip
    run_dir = run_dir_of(recipe, net, seed)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    train(cfg, run_dir, progress=False)
    wall = time.perf_counter() - t0
    return row(
        recipe, net, seed, dataclasses.asdict(cfg), read_metrics(run_dir),
        wall_s=round(wall, 1), loadavg_1m=round(os.getloadavg()[0], 2),
    )  # fmt: skip


def add_stopped(recipe: str, net: str, seed: int) -> None:
    """A run stopped by hand once it was clearly behind: its curve up to then, as a row."""
    from reslab.runs import read_config, read_metrics

    run_dir = run_dir_of(recipe, net, seed)
    metrics = read_metrics(run_dir)
    new = row(
        recipe, net, seed, dataclasses.asdict(read_config(run_dir).train), metrics,
        wall_s=None, loadavg_1m=None, stopped_at=int(metrics[-1]["iteration"]),
    )  # fmt: skip
    save_results([r for r in load_results() if (r["recipe"], r["net"], r["seed"]) != (recipe, net, seed)] + [new])


def add_experiment(exp_dir: Path, recipe: str, wall_s: float) -> None:
    """The finished runs of an experiment directory (such as the published preset's) as rows."""
    from reslab.runs import gather

    rows = [r for r in load_results() if r["recipe"] != recipe]
    for run in gather(exp_dir)[0]:
        if run.state != "finished":
            continue
        rows.append(
            row(
                recipe, f"{run.arch}-{run.depth}", run.seed, dataclasses.asdict(run.config.train), run.metrics,
                wall_s=run.metrics[-1]["seconds"], loadavg_1m=None,
                note=f"a cell of {exp_dir.name}; the whole experiment took {wall_s:.0f} s",
            )
        )  # fmt: skip
    save_results(rows)


def table(rows: list[dict]) -> str:
    """Per recipe: mean errors per net, wall time, and the crossovers of the deep over the shallow nets."""
    out = [
        "| recipe | net | seeds | training error | test error | wall (s, per run) | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {}
    for r in rows:
        by.setdefault((r["recipe"], r["net"]), []).append(r)
    for (recipe, net), rs in by.items():
        seeds = ",".join(str(r["seed"]) for r in rs)
        errs = " / ".join(f"{100 * r['train_error']:.1f}" for r in rs)
        stopped = [f"seed {r['seed']} stopped at iteration {r['stopped_at']}" for r in rs if r.get("stopped_at")]

        def mean(key: str, fmt: str, rs=rs) -> str:
            values = [r[key] for r in rs if r.get(key) is not None]
            return format(sum(values) / len(values), fmt) if values else "-"

        train = f"{mean('train_error', '.1%')} ({errs})" + (f", {'; '.join(stopped)}" if stopped else "")
        out.append(
            f"| {recipe} | {net} | {seeds} | {train} | {mean('test_error', '.1%')} | {mean('wall_s', '.0f')} "
            f"| {mean('loadavg_1m', '.2f')} |"
        )
    out += [
        "",
        "| recipe | seed | pair | deeper net's training error stays below from iteration |",
        "|---|---|---|---|",
    ]
    for (recipe, net), rs in by.items():
        arch, depth = net.rsplit("-", 1)
        for r in rs:
            for (recipe2, net2), rs2 in by.items():
                a2, d2 = net2.rsplit("-", 1)
                if recipe2 != recipe or a2 != arch or int(d2) >= int(depth):
                    continue
                other = next((x for x in rs2 if x["seed"] == r["seed"]), None)
                if other:
                    it = crossover(r["curve"], other["curve"])
                    out.append(
                        f"| {recipe} | {r['seed']} | {net} below {net2} "
                        f"| {it if it is not None else 'never in this budget'} |"
                    )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--nets", default="plain-20,plain-56,resnet-20,resnet-56")
    p.add_argument("--seeds", default="100,101")
    p.add_argument("--table", action="store_true", help="print the table of the results so far and exit")
    p.add_argument(
        "--add-experiment",
        nargs=3,
        metavar=("DIR", "RECIPE", "WALL_S"),
        help="add the finished runs of an experiment directory as rows of RECIPE (its wall time WALL_S) and exit",
    )
    p.add_argument(
        "--add-stopped", nargs=3, metavar=("RECIPE", "NET", "SEED"), help="add a run stopped by hand and exit"
    )
    add_cifar_options(p)
    args = p.parse_args()
    if args.add_stopped:
        add_stopped(args.add_stopped[0], args.add_stopped[1], int(args.add_stopped[2]))
        return
    if args.add_experiment:
        add_experiment(Path(args.add_experiment[0]), args.add_experiment[1], float(args.add_experiment[2]))
        return
    if args.table:
        text = HEADER + machine() + "\n\n" + table(load_results()) + "\n"
        (RESULTS.parent / "cpu_recipe.md").write_text(text)
        print(text)
        return
    folder = cifar_folder(args)
    if folder is None:
        raise SystemExit(2)
    for recipe in args.recipes.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            for net in args.nets.split(","):
                rows = load_results()
                if any(r["recipe"] == recipe and r["net"] == net and r["seed"] == seed for r in rows):
                    continue
                row = run_one(recipe, net, seed, f"imagefolder:{folder}")
                save_results(load_results() + [row])
                print(f"{recipe} {net} seed {seed}: train {row['train_error']:.3f} test {row['test_error']:.3f} "
                      f"in {row['wall_s']:.0f} s (load {row['loadavg_1m']})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
