"""Experiments: a grid of run configurations, run by a backend, then summarised.

An experiment directory is a folder of ordinary run directories (one per cell, named
ARCH-DEPTH-seedS) plus experiment.json (what was asked), summary.csv and report.html. Running
the same grid again skips finished cells and resumes interrupted ones from their checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

from reslab import runs
from reslab.errors import ExperimentInterrupted, UserError
from reslab.signals import Catching
from reslab.train import TrainConfig

SUMMARY_FIELDS = [
    "arch",
    "depth",
    "parameters",
    "macs",
    "runs",
    "train_error_mean",
    "train_error_std",
    "val_error_mean",
    "val_error_std",
    "test_error_mean",
    "test_error_std",
    "reach_threshold",
    "iterations_to_reach",
    "status",
]
REACH_CANDIDATES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)


def cell_name(cfg: TrainConfig) -> str:
    return f"{cfg.arch}-{cfg.depth}-seed{cfg.seed}"


def grid(base: TrainConfig, archs: list[str], depths: list[int], seeds: list[int]) -> list[TrainConfig]:
    """Every (arch, depth, seed) combination of `base`; each is validated before anything runs."""
    cells = []
    for arch in archs:
        for depth in depths:
            for seed in seeds:
                cfg = dataclasses.replace(base, arch=arch, depth=depth, seed=seed)
                cfg.validate()
                cells.append(cfg)
    if not cells:
        raise UserError("the grid is empty: give at least one architecture and one depth.")
    return cells


@contextmanager
def experiment_lock(exp_dir: Path):
    """One reslab process per experiment directory; a second one is refused with a message (the
    caller has checked with runs.claim_dir that the directory may be written)."""
    busy = (
        f"another reslab process is running the experiment in {exp_dir}; wait for it to finish (or stop it) "
        "before starting this one."
    )
    with runs.locked(exp_dir, busy):
        yield


# The grid's varying settings; everything else in a cell's training configuration is the recipe.
GRID_KEYS = ("arch", "depth", "seed")


def recipe(train: dict) -> dict:
    """What every run of one experiment must share: its training settings less the grid's own and
    less where or how fast it trains."""
    return {k: v for k, v in train.items() if k not in GRID_KEYS and k not in runs.NOT_RECIPE}


def stale_cells(exp_dir: Path, cells: list[TrainConfig]) -> dict[str, list[str]]:
    """Cells whose run directory already holds a run trained with other settings than asked,
    each with the differences; a cell directory that is not reslab's is refused outright."""
    stale = {}
    for cfg in cells:
        run_dir = exp_dir / cell_name(cfg)
        if not run_dir.exists():
            continue
        runs.claim_dir(run_dir, "run")
        if runs.is_run_dir(run_dir):
            changed = runs.differences(runs.read_config(run_dir)["train"], dataclasses.asdict(cfg))
            if changed:
                stale[run_dir.name] = changed
    return stale


def refuse_or_remove_stale(exp_dir: Path, cells: list[TrainConfig], overwrite: bool, log) -> None:
    """A re-run with other settings must never show the old results as if they were the new ones:
    refuse it with the differences, or with overwrite delete those runs so they train anew."""
    stale = stale_cells(exp_dir, cells)
    if not stale:
        return
    if not overwrite:
        first, changed = next(iter(stale.items()))
        raise UserError(
            f"{exp_dir} holds {len(stale)} run(s) trained with other settings than asked "
            f"({first}: {'; '.join(changed[:5])}). Their results would be shown as if they were this "
            "experiment's. Choose another --out, or add --overwrite to delete them and train them anew."
        )
    import shutil

    for name in stale:
        with runs.locked(exp_dir / name, f"another process is training {exp_dir / name}; stop it first."):
            shutil.rmtree(exp_dir / name)
    log(f"--overwrite: deleted {len(stale)} run(s) trained with other settings: {', '.join(stale)}")


BUSY = threading.Event()  # set while a worker process trains a cell


def init_worker(threads: int, gpus) -> None:
    """Pin a worker process to its share of the machine: some CPU threads, or one GPU; and make
    it stop (saving a checkpoint) and exit when the driver dies, instead of living on as an orphan."""
    from reslab.train import StopRequest

    StopRequest.in_worker()
    die_with_parent()
    parent = os.getppid()

    def watchdog() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        while BUSY.is_set():  # the SIGTERM from the parent's death is making the run checkpoint
            time.sleep(0.1)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())  # before CUDA is first touched
    if threads:
        import torch

        torch.set_num_threads(threads)


def die_with_parent() -> None:
    import ctypes

    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_cell(cfg: TrainConfig, run_dir: Path) -> dict:
    """Train one cell (resuming it if it was interrupted); never raises, returns its outcome. A
    worker asked to stop before the cell began does not start it."""
    from reslab.train import StopRequest

    if StopRequest.early is not None:
        return {"name": run_dir.name, "state": "not started", "message": "the experiment was stopped", "seconds": 0}
    BUSY.set()
    try:
        return train_cell(cfg, run_dir)
    finally:
        BUSY.clear()


def train_cell(cfg: TrainConfig, run_dir: Path) -> dict:
    from reslab.train import Diverged, Interrupted, train

    t0 = time.perf_counter()

    def failed(message: str) -> dict:
        if runs.owner(run_dir) == "run":  # only ever a status of reslab's own run, never a stranger's file
            runs.write_status(run_dir, "failed", message)
        return {"name": run_dir.name, "state": "failed", "message": message, "seconds": time.perf_counter() - t0}

    try:
        resume = runs.is_run_dir(run_dir)
        row = train(cfg, run_dir, resume=resume, progress=False, log=lambda *_: None)
        return {"name": run_dir.name, "state": "finished", "row": row, "seconds": time.perf_counter() - t0}
    except runs.Locked as e:  # another process is training it: its status is that process's to write
        return {"name": run_dir.name, "state": "busy", "message": str(e), "seconds": time.perf_counter() - t0}
    except (Diverged, Interrupted) as e:
        state = "diverged" if isinstance(e, Diverged) else "interrupted"
        return {"name": run_dir.name, "state": state, "message": str(e), "seconds": time.perf_counter() - t0}
    except UserError as e:
        return failed(str(e))
    except Exception as e:  # a bug in one cell must not stop the others; its status says what happened
        return failed(f"{type(e).__name__}: {e}")


def default_jobs(n_cells: int, runs_per_gpu: int = 1) -> int:
    """runs_per_gpu processes per GPU with GPUs (small CIFAR nets leave a big GPU mostly idle);
    on CPU one per core, since these small convolutions scale better across processes than
    across the threads of one process."""
    import torch

    slots = torch.cuda.device_count() * runs_per_gpu if torch.cuda.is_available() else (os.cpu_count() or 1)
    return max(1, min(n_cells, slots))


class GridProgress:
    """While cells train, says every `every` seconds how far the grid is, from the cells'
    status.json files (which every backend's workers keep up to date)."""

    def __init__(self, exp_dir: Path, cells: list[TrainConfig], log, every: float = 60.0):
        self.exp_dir, self.names, self.log, self.every = Path(exp_dir), [cell_name(c) for c in cells], log, every
        self.last = time.perf_counter()

    def __call__(self) -> None:
        if time.perf_counter() - self.last < self.every:
            return
        self.last = time.perf_counter()
        statuses = {name: runs.read_status(self.exp_dir / name) for name in self.names}
        done = sum(s["state"] == "finished" for s in statuses.values())
        running = [
            f"{name} {s['iteration']}/{s['total']}" + (f" on {s['host']}" if s.get("host") else "")
            for name, s in statuses.items()
            if s["state"] == "running" and "total" in s
        ]
        self.log(
            f"progress: {done} of {len(self.names)} finished"
            + (f"; running: {', '.join(running)}" if running else "; waiting for workers")
        )


def run_experiment(
    exp_dir: Path,
    cells: list[TrainConfig],
    jobs: int | None = None,
    log=print,
    spec: dict | None = None,
    backend: str = "local",
    address: str | None = None,
    runs_per_gpu: int = 1,
    cpus_per_run: int | None = None,
    retries: int = 3,
    progress_every: float = 60.0,
    overwrite: bool = False,
) -> list[dict]:
    """Run every cell not yet finished with the local or the Ray backend; returns one outcome
    per cell, in grid order. Both backends write the same run directories and summary."""
    if backend not in ("local", "ray"):
        raise UserError(f"unknown backend '{backend}': choose local or ray.")
    if backend == "ray":
        from reslab import ray_backend

        ray_backend.import_ray()  # says how to install it before anything is loaded or written
    exp_dir = Path(exp_dir)
    runs.claim_dir(exp_dir, "experiment")
    refuse_or_remove_stale(exp_dir, cells, overwrite, log)
    unfinished = [c for c in cells if runs.read_status(exp_dir / cell_name(c))["state"] != "finished"]
    # Load (download, decode) each dataset once before anything is written: a bad dataset is one
    # clear error, and parallel workers do not race to fetch or cache the same files.
    from reslab.data import load_dataset

    for name, data_dir, download in sorted({(c.dataset, c.data_dir, c.download) for c in unfinished}, key=str):
        load_dataset(name, data_dir, download)
    with contextlib.ExitStack() as stack:
        if backend == "ray" and unfinished:
            stack.enter_context(ray_backend.cluster(address))  # joined before anything is written
        stack.enter_context(experiment_lock(exp_dir))
        record = {
            **(spec or {}),
            "cells": [cell_name(c) for c in cells],
            "recipe": recipe(dataclasses.asdict(cells[0])) if cells else {},
        }
        runs.write_json(exp_dir / "experiment.json", record)
        todo, outcomes = [], {}
        for cfg in cells:
            run_dir = exp_dir / cell_name(cfg)
            if runs.read_status(run_dir)["state"] == "finished":
                outcomes[run_dir.name] = {"name": run_dir.name, "state": "finished", "skipped": True}
            else:
                todo.append(cfg)
        if outcomes:
            log(f"{len(outcomes)} of {len(cells)} runs already finished; {len(todo)} to run")
        # Deepest first: the longest runs start early, so parallel workers finish together.
        todo.sort(key=lambda c: -c.depth)
        t0 = time.perf_counter()
        done = 0

        def finished(outcome: dict) -> None:
            nonlocal done
            done += 1
            outcomes[outcome["name"]] = outcome
            log(describe_outcome(outcome, done, len(todo), time.perf_counter() - t0))

        progress = GridProgress(exp_dir, todo, log, progress_every)
        try:
            if backend == "ray" and todo:
                ray_backend.run(exp_dir, todo, finished, progress, runs_per_gpu, cpus_per_run, retries)
            else:
                run_local(exp_dir, todo, finished, progress, jobs, runs_per_gpu)
        finally:
            write_summary(exp_dir)
    return [outcomes[cell_name(c)] for c in cells]


def run_local(exp_dir: Path, todo: list[TrainConfig], finished, progress, jobs=None, runs_per_gpu=1) -> None:
    """The local backend: worker processes on this machine, each with its share of the cores or
    of the GPUs (runs_per_gpu processes per GPU). Ctrl-C (or SIGTERM) stops the whole grid: queued
    cells are cancelled, running ones save a checkpoint, then ExperimentInterrupted is raised; a
    second Ctrl-C stops the workers at once (they resume from their previous checkpoint)."""
    jobs = min(jobs or default_jobs(len(todo), runs_per_gpu), max(1, len(todo)))
    if jobs <= 1:
        for i, cfg in enumerate(todo):
            outcome = run_cell(cfg, exp_dir / cell_name(cfg))
            finished(outcome)
            if outcome["state"] == "interrupted":  # the user stopped it: the rest of the grid waits too
                raise ExperimentInterrupted(stopped_message(exp_dir, [outcome], len(todo) - i - 1))
        return
    import multiprocessing as mp

    import torch

    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")
    gpus = None
    if torch.cuda.is_available() and any(c.device == "auto" for c in todo):
        gpus = ctx.Queue()
        for i in range(jobs):
            gpus.put(i % torch.cuda.device_count())
    with (
        DriverSignals() as stop,
        ProcessPoolExecutor(
            max_workers=jobs, mp_context=ctx, initializer=init_worker, initargs=(threads, gpus)
        ) as pool,
    ):
        pending = {pool.submit(run_cell, cfg, exp_dir / cell_name(cfg)) for cfg in todo}
        outcomes, cancelled = [], 0
        while pending:
            complete, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in complete:
                if not fut.cancelled():
                    outcomes.append(fut.result())
                    finished(outcomes[-1])
            if stop.first():
                cancelled = sum(f.cancel() for f in pending)
                pending = {f for f in pending if not f.cancelled()}
                signal_workers(pool, signal.SIGTERM)  # they may not have had it (SIGINT to the driver alone)
                stop.say_stopping(cancelled)
            elif stop.again():
                signal_workers(pool, signal.SIGKILL)
                pool.shutdown(wait=False, cancel_futures=True)
                raise stop.at_once(exp_dir)
            progress()
        if stop.count:
            raise ExperimentInterrupted(stopped_message(exp_dir, outcomes, cancelled))


def stopped_message(exp_dir: Path, outcomes: list[dict], cancelled: int) -> str:
    """What a stop left: the cells that saved a checkpoint, and how many never started."""
    saved = [o["name"] for o in outcomes if o["state"] == "interrupted"]
    not_started = cancelled + sum(o["state"] == "not started" for o in outcomes)
    return (
        f"experiment stopped: {len(saved)} running cell(s) saved a checkpoint"
        + (f" ({', '.join(saved)})" if saved else "")
        + f", {not_started} not started. "
        f"Resume with the same command: it skips the finished cells of {exp_dir} and resumes the others."
    )


class DriverSignals(Catching):
    """Ctrl-C and SIGTERM in the driver of a grid, counted; the backend's wait loop asks first()
    (cancel the queued cells, ask the running ones to checkpoint) and again() (stop at once)."""

    def __init__(self):
        super().__init__()
        self.count, self.handled = 0, False

    def handle(self, signum, frame):
        self.count += 1

    def first(self) -> bool:
        """True once, when the first signal is seen."""
        if self.count == 1 and not self.handled:
            self.handled = True
            return True
        return False

    def again(self) -> bool:
        return self.count > 1

    @staticmethod
    def say_stopping(cancelled: int | None) -> None:
        queued = "the queued cells" if cancelled is None else f"{cancelled} queued cell(s)"
        print(
            f"stopping: {queued} cancelled; the running ones are saving a checkpoint "
            "(Ctrl-C again to stop them at once)",
            file=sys.stderr,
        )

    @staticmethod
    def at_once(exp_dir: Path) -> ExperimentInterrupted:
        return ExperimentInterrupted(
            "stopped at once; the running cells lost the steps since their last checkpoint. "
            f"Resume with the same command (it skips finished cells and resumes the others in {exp_dir})."
        )


def signal_workers(pool, signum: int) -> None:
    """Send `signum` to every worker process of a local pool."""
    for proc in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)


def describe_outcome(o: dict, done: int, total: int, elapsed: float) -> str:
    head = f"[{done}/{total}] {o['name']}"
    if o["state"] == "finished":
        r = o["row"]
        return (
            f"{head}: training error {r['train_error']:.1%}, test error {r['test_error']:.1%} "
            f"({o['seconds']:.0f} s; {elapsed:.0f} s so far)"
        )
    return f"{head}: {o['state']}: {o.get('message', '')}"


# ---------------------------------------------------------------------------------------------
# summaries


def gather(exp_dir: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """The runs of an experiment (or of any folder of runs) that belong together, each with its
    config, metrics and status, and the (name, reason) of every run left out. Runs belong together
    when they are cells of its experiment.json and share its recipe (dataset, schedule, shortcut,
    width...); without an experiment.json the recipe of most runs is the reference."""
    exp_dir = Path(exp_dir)
    record = runs.read_json(exp_dir / "experiment.json") if (exp_dir / "experiment.json").is_file() else {}
    record = record if isinstance(record, dict) else {}
    cells = record.get("cells")
    found, skipped = [], []
    for d in runs.find_runs(exp_dir):
        if isinstance(cells, list) and d != exp_dir and d.name not in cells:
            skipped.append((d.name, "not a cell of this experiment (see its experiment.json)"))
            continue
        try:
            config = runs.read_config(d)
            found.append(
                {
                    "dir": d,
                    "name": d.name,
                    "config": config,
                    "metrics": runs.read_metrics(d),
                    "status": runs.read_status(d),
                }
            )
        except UserError as e:
            skipped.append((d.name, str(e)))
    reference = record.get("recipe")
    if not isinstance(reference, dict) and found:
        keys = [recipe(r["config"]["train"]) for r in found]
        reference = max(keys, key=keys.count)
    together = []
    for r in found:
        changed = runs.differences(reference, recipe(r["config"]["train"]), labels=("in the others", "here"))
        if changed:
            skipped.append((r["name"], "trained with other settings than the rest (" + "; ".join(changed[:4]) + ")"))
        else:
            together.append(r)
    return together, skipped


def load_runs(exp_dir: Path) -> list[dict]:
    """Every run directory of an experiment that belongs to it, with its config, metrics and status."""
    return gather(exp_dir)[0]


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def iterations_to_reach(metrics: list[dict], threshold: float) -> float | None:
    """First evaluated iteration at which the training error is at or below `threshold`."""
    return next((r["iteration"] for r in metrics if r["train_error"] <= threshold), None)


def choose_threshold(all_runs: list[dict]) -> float:
    """The lowest round training error that every run of the shallowest depth reached, so the
    convergence column compares like with like (a deeper net may never get there)."""
    finished = [r for r in all_runs if r["metrics"]]
    if not finished:
        return 0.5
    shallow = min(r["config"]["model"]["depth"] for r in finished)
    best = [min(m["train_error"] for m in r["metrics"]) for r in finished if r["config"]["model"]["depth"] == shallow]
    worst = max(best)
    return next((t for t in REACH_CANDIDATES if t >= worst), 1.0)


def summarize(exp_dir: Path, threshold: float | None = None, all_runs: list[dict] | None = None) -> list[dict]:
    """Table-6-style rows, one per (arch, depth): errors as mean and std over seeds (of the runs
    gather() finds, unless the caller has them already)."""
    all_runs = load_runs(exp_dir) if all_runs is None else all_runs
    threshold = threshold if threshold is not None else choose_threshold(all_runs)
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in all_runs:
        groups.setdefault((r["config"]["model"]["arch"], r["config"]["model"]["depth"]), []).append(r)
    rows = []
    for (arch, depth), members in sorted(groups.items(), key=lambda kv: (arch_order(kv[0][0]), kv[0][1])):
        done = [m for m in members if m["status"]["state"] == "finished" and m["metrics"]]
        finals = [m["metrics"][-1] for m in done]
        row = {
            "arch": arch,
            "depth": depth,
            "parameters": members[0]["config"]["resolved"]["parameters"],
            "macs": members[0]["config"]["resolved"]["macs"],
            "runs": len(done),
        }
        for split in ("train", "val", "test"):
            vals = [f[f"{split}_error"] for f in finals if f.get(f"{split}_error") is not None]
            row[f"{split}_error_mean"], row[f"{split}_error_std"] = mean_std(vals)
        reach = [iterations_to_reach(m["metrics"], threshold) for m in done]
        row["reach_threshold"] = threshold
        row["iterations_to_reach"] = (sum(reach) / len(reach)) if reach and None not in reach else None
        states = sorted({m["status"]["state"] for m in members} - {"finished"})
        row["status"] = "finished" if not states else ", ".join(states)
        rows.append(row)
    return rows


def arch_order(arch: str) -> int:
    from reslab.models import ARCHS

    return ARCHS.index(arch) if arch in ARCHS else len(ARCHS)


def reach_text(r: dict, group: str = "") -> str:
    """A summary row's iterations to the threshold: '-' without a finished run, or 'not reached'."""
    if not r["runs"]:
        return "-"
    return "not reached" if r["iterations_to_reach"] is None else f"{r['iterations_to_reach']:{group}.0f}"


def write_summary(exp_dir: Path) -> list[dict]:
    rows = summarize(exp_dir)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in SUMMARY_FIELDS})
    runs.atomic_write_text(Path(exp_dir) / "summary.csv", buf.getvalue())
    return rows


def pct(v: float | None, std: float | None = None) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f} ± {100 * std:.1f}" if std else f"{100 * v:.1f}"


def summary_table(rows: list[dict]) -> str:
    """The summary as aligned text for the terminal."""
    has_val = any(r["val_error_mean"] is not None for r in rows)
    threshold = rows[0]["reach_threshold"] if rows else 0
    head = (
        ["network", "params", "MACs (M)", "runs", "train err %"]
        + (["val err %"] if has_val else [])
        + ["test err %", f"iters to {100 * threshold:g}% train err"]
    )
    lines = [head]
    for r in rows:
        reach = reach_text(r)
        line = [
            f"{r['arch']}-{r['depth']}",
            f"{r['parameters']:,}",
            f"{r['macs'] / 1e6:.2f}",
            str(r["runs"]),
            pct(r["train_error_mean"], r["train_error_std"]),
        ]
        if has_val:
            line.append(pct(r["val_error_mean"], r["val_error_std"]))
        line += [pct(r["test_error_mean"], r["test_error_std"]), reach]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines
    )
