"""Experiments: a grid of run configurations, run by a backend, then summarised.

An experiment directory is a folder of ordinary run directories (one per cell, named
ARCH-DEPTH-seedS) plus experiment.json (what was asked), summary.csv and report.html. Running
the same grid again skips finished cells and resumes interrupted ones from their checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from reslab import config, files, runs
from reslab.accel import command_line
from reslab.cells import (
    Outcome,
    cell_name,
    describe_outcome,
    drive,
    init_worker,
    run_cell,
    run_cells_on_streams,
    signal_workers,
    stopped_message,
)
from reslab.config import TrainConfig
from reslab.errors import ExperimentInterrupted, UserError, plural
from reslab.summary import write_summary
from reslab.verdicts import Verdict

log = logging.getLogger(__name__).info


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
    config.refuse_unused(cells)
    return cells


@contextmanager
def experiment_lock(exp_dir: Path):
    """One reslab process per experiment directory; a second one is refused with a message (the
    caller has checked with runs.claim_dir that the directory may be written)."""
    busy = (
        f"another reslab process is running the experiment in {exp_dir}; wait for it to finish (or stop it) "
        "before starting this one."
    )
    with files.locked(exp_dir, busy):
        yield


def stale_cells(exp_dir: Path, cells: list[TrainConfig]) -> dict[str, list[str]]:
    """Cells whose run directory already holds a run trained with other settings than asked,
    each with the differences; a cell directory that is not reslab's is refused outright."""
    stale = {}
    for cfg in cells:
        run_dir = exp_dir / cell_name(cfg)
        if files.is_link(run_dir):
            raise UserError(f"{run_dir} is a symbolic link; reslab never follows a link among its runs. Remove it.")
        if not run_dir.exists():
            continue
        runs.claim_dir(run_dir, "run")
        if runs.is_run_dir(run_dir):
            changed = config.differences(dataclasses.asdict(runs.read_config(run_dir).train), dataclasses.asdict(cfg))
            if changed:
                stale[run_dir.name] = changed
    return stale


def refuse_stale(exp_dir: Path, stale: dict[str, list[str]], overwrite: bool) -> None:
    """A re-run with other settings must never show the old results as if they were the new ones:
    without overwrite it is refused, with the differences."""
    if stale and not overwrite:
        first, changed = next(iter(stale.items()))
        raise UserError(
            f"{exp_dir} holds {len(stale)} run(s) trained with other settings than asked "
            f"({first}: {'; '.join(changed[:5])}). Their results would be shown as if they were this "
            "experiment's. Choose another --out, or add --overwrite to delete them and train them anew."
        )


def remove_stale(exp_dir: Path, cells: list[TrainConfig]) -> None:
    """--overwrite: delete the runs trained with other settings, so they train anew. Called with
    the experiment's lock held, so no other reslab process is running this experiment."""
    import shutil

    stale = stale_cells(exp_dir, cells)
    for name in stale:
        with files.locked(exp_dir / name, f"another process is training {exp_dir / name}; stop it first."):
            shutil.rmtree(exp_dir / name)
    if stale:
        log(f"--overwrite: deleted {len(stale)} run(s) trained with other settings: {', '.join(stale)}")


def split_archs(text: str) -> list[str]:
    from reslab.models import arch

    archs = [a.strip() for a in text.split(",") if a.strip()]
    if not archs:
        arch("")  # the sentence that names the architectures there are
    for a in archs:
        arch(a)
    return archs


@dataclasses.dataclass
class GridResult:
    """What a grid (demo or experiment) found: each cell's outcome, the Table-6 rows, the verdicts,
    the crossovers, the runs left out of the summary (with why) and the report written."""

    outcomes: list[Outcome]
    summary: list[dict]
    verdicts: list[Verdict]
    crossovers: list[dict]
    skipped: list[tuple[str, str]]
    report: Path | None = None
    findings: list[str] = dataclasses.field(default_factory=list)  # the analyses' lines (the demo's)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state != "finished"]


def run_grid(
    out: Path, base: TrainConfig, archs, depths, seeds: list[int], spec: dict, backend=None, overwrite=False
) -> GridResult:
    """Train the grid (demo and experiment alike) and judge it; the report is written by report()."""
    from reslab.runs import gather
    from reslab.summary import crossovers, summarize
    from reslab.verdicts import degradation_verdicts

    cells = grid(base, archs, depths, seeds)
    log(
        f"training {len(cells)} network{'s' if len(cells) != 1 else ''} into {out}: {', '.join(archs)} x depths "
        f"{', '.join(map(str, depths))} x seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} "
        f"on {base.dataset}"
    )
    outcomes = run_experiment(out, cells, backend, spec, overwrite)
    together, skipped = gather(out)
    summary = summarize(out, all_runs=together)
    verdicts = degradation_verdicts(summary, together)
    return GridResult(outcomes, summary, verdicts, crossovers(together), skipped)


def report(out: Path, result: GridResult) -> GridResult:
    """Write the report of a grid's directory into the result."""
    from reslab.report import write_report

    result.report = write_report(out)
    return result


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

    def __init__(self, exp_dir: Path, cells: list[TrainConfig], every: float = 60.0):
        self.exp_dir, self.every = Path(exp_dir), every
        # A step of these nets costs in proportion to their depth (every stage's convs have the
        # same MACs), so a ResNet-56 cell is about 3 of a ResNet-20's in the ETA.
        self.weights = {cell_name(c): float(c.depth) for c in cells}
        self.start = self.last = time.perf_counter()

    def __call__(self) -> None:
        if time.perf_counter() - self.last < self.every:
            return
        self.last = time.perf_counter()
        statuses = {name: runs.read_status(self.exp_dir / name) for name in self.weights}
        log(progress_line(statuses, self.last - self.start, self.weights))


def progress_line(statuses: dict[str, dict], elapsed: float, weights: dict[str, float] | None = None) -> str:
    """How far the grid is: cells finished, the running ones (with their node when cells run on
    more than one), and an overall ETA from the fraction of the grid's work done so far, each
    cell counting by its weight (its cost; 1 each without weights)."""
    done = sum(s["state"] == "finished" for s in statuses.values())
    running = {n: s for n, s in statuses.items() if s["state"] == "running" and s.get("total")}
    hosts = {s.get("host") for s in running.values()}
    weight = {n: (weights or {}).get(n, 1.0) for n in statuses}
    progressed = sum(weight[n] for n, s in statuses.items() if s["state"] == "finished")
    progressed += sum(weight[n] * s["iteration"] / s["total"] for n, s in running.items())
    fraction = progressed / max(1e-9, sum(weight.values()))
    line = f"progress: {done} of {len(statuses)} finished"
    if running:
        on = lambda s: f" on {s['host']}" if len(hosts) > 1 and s.get("host") else ""  # noqa: E731
        line += "; running: " + ", ".join(f"{n} {s['iteration']}/{s['total']}{on(s)}" for n, s in running.items())
    else:
        line += "; waiting for workers"
    if 0 < fraction < 1:
        left = elapsed * (1 - fraction) / fraction
        line += f"; about {left / 60:.0f} min left" if left >= 60 else f"; about {left:.0f} s left"
    return line


class Backend(Protocol):
    """Where a grid's cells run: LocalBackend (processes here) or ray_backend.RayBackend."""

    def joined(self) -> contextlib.AbstractContextManager: ...  # the cluster, joined before anything is written

    def run(self, exp_dir: Path, todo: list[TrainConfig], finished, progress) -> None: ...


def split_finished(exp_dir: Path, cells: list[TrainConfig]) -> tuple[list[TrainConfig], dict[str, Outcome]]:
    """The cells still to train, and the outcomes of those already finished."""
    todo, outcomes = [], {}
    for cfg in cells:
        run_dir = exp_dir / cell_name(cfg)
        if runs.read_status(run_dir)["state"] == "finished":
            outcomes[run_dir.name] = Outcome(run_dir.name, "finished", skipped=True)
        else:
            todo.append(cfg)
    return todo, outcomes


def load_datasets(cells: list[TrainConfig]) -> None:
    """Load (download, decode) each dataset once before anything is written: a bad dataset is one
    clear error, and parallel workers do not race to fetch or cache the same files."""
    from reslab.data import check_sizes, load_dataset

    for name, data_dir, download in sorted({(c.dataset, c.data_dir, c.download) for c in cells}, key=str):
        ds = load_dataset(name, data_dir, download)
        for c in cells:
            if (c.dataset, c.data_dir, c.download) == (name, data_dir, download):
                check_sizes(ds, c.subset, c.val_split, c.test_subset)


def check_before_training(exp_dir: Path, cells: list[TrainConfig]) -> None:
    """What can refuse the experiment, refused before anything is trained or written: a folder
    of other files, a file of the user's where the report goes, a missing tensorboard."""
    from reslab.report import OUTPUTS

    runs.claim_dir(exp_dir, "experiment")
    files.check_outputs(exp_dir, ["experiment.json", "summary.csv", *OUTPUTS])
    if any(c.tensorboard for c in cells):
        from reslab.progress import check_tensorboard

        check_tensorboard()


def run_experiment(
    exp_dir: Path,
    cells: list[TrainConfig],
    backend: Backend | None = None,
    spec: dict | None = None,
    overwrite: bool = False,
    progress_every: float = 60.0,
) -> list[Outcome]:
    """Run every cell not yet finished on `backend` (default: LocalBackend(), one process per
    core or GPU); returns one outcome per cell, in grid order. Every backend writes the same run
    directories and summary."""
    runner = backend if backend is not None else LocalBackend()
    exp_dir = Path(exp_dir)
    check_before_training(exp_dir, cells)
    stale = stale_cells(exp_dir, cells)
    refuse_stale(exp_dir, stale, overwrite)
    unfinished = [
        c for c in cells if cell_name(c) in stale or runs.read_status(exp_dir / cell_name(c))["state"] != "finished"
    ]
    load_datasets(unfinished)
    with contextlib.ExitStack() as stack:
        if unfinished:
            stack.enter_context(runner.joined())  # a cluster is joined before anything is written
        stack.enter_context(experiment_lock(exp_dir))  # before anything is deleted or written
        remove_stale(exp_dir, cells)
        record = {
            "kind": "degradation",  # a grid of nets by depth: the only kind so far
            "command": command_line(),
            **(spec or {}),
            "cells": [cell_name(c) for c in cells],
            "recipe": config.recipe(cells[0]) if cells else {},
        }
        runs.write_experiment(exp_dir, record)
        todo, outcomes = split_finished(exp_dir, cells)
        if outcomes:
            log(f"{len(outcomes)} of {len(cells)} runs already finished; {len(todo)} to run")
        # Deepest first: the longest runs start early, so parallel workers finish together.
        todo.sort(key=lambda c: -c.depth)
        t0 = time.perf_counter()
        done = 0

        def finished(outcome: Outcome) -> None:
            nonlocal done
            done += 1
            outcomes[outcome.name] = outcome
            log(describe_outcome(outcome, done, len(todo), time.perf_counter() - t0))

        progress = GridProgress(exp_dir, todo, progress_every)
        try:
            if todo:
                runner.run(exp_dir, todo, finished, progress)
        finally:
            write_summary(exp_dir)
    return [outcomes[cell_name(c)] for c in cells]


SHARING = ("processes", "streams")


class LocalBackend:
    """Worker processes on this machine, each with its share of the cores or of the GPUs.
    runs_per_gpu networks share a GPU as that many processes (share="processes"), or as that many
    threads of one process, each on its own CUDA stream (share="streams"). Ctrl-C (or SIGTERM)
    stops the whole grid: queued cells are cancelled, running ones save a checkpoint, then
    ExperimentInterrupted is raised; a second Ctrl-C stops the workers at once (they resume from
    their previous checkpoint)."""

    def __init__(self, jobs: int | None = None, runs_per_gpu: int = 1, share: str = "processes"):
        if share not in SHARING:
            raise UserError(f"--share-gpu takes processes or streams, got '{share}'.")
        self.jobs, self.runs_per_gpu, self.share = jobs, runs_per_gpu, share

    def joined(self):
        return contextlib.nullcontext()

    def run(self, exp_dir: Path, todo: list[TrainConfig], finished, progress) -> None:
        run_local(exp_dir, todo, finished, progress, self.jobs, self.runs_per_gpu, self.share)


def run_local(
    exp_dir: Path, todo: list[TrainConfig], finished, progress, jobs=None, runs_per_gpu=1, share="processes"
) -> None:
    """LocalBackend's work."""
    import torch

    streams = share == "streams"
    if streams:  # one process per GPU (or per --jobs), runs_per_gpu cells on its threads
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 1
        jobs = min(jobs or n_gpus, max(1, len(todo)))
    else:
        jobs = min(jobs or default_jobs(len(todo), runs_per_gpu), max(1, len(todo)))
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    if (jobs > 1 or streams) and (why := no_workers(ctx)):
        logging.getLogger(__name__).warning(
            f"note: worker processes cannot start here ({why}; is /dev/shm missing or read-only?), so the "
            f"{plural(len(todo), 'run')} train one after another in this process."
        )
        jobs, streams = 1, False
    if jobs <= 1 and not streams:
        for i, cfg in enumerate(todo):
            outcome = run_cell(cfg, exp_dir / cell_name(cfg))
            finished(outcome)
            if outcome.state == "interrupted":  # the user stopped it: the rest of the grid waits too
                raise ExperimentInterrupted(stopped_message(exp_dir, [outcome], len(todo) - i - 1))
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    gpus: Any = None
    if torch.cuda.is_available() and any(c.device == "auto" for c in todo):
        gpus = ctx.Queue()
        for i in range(jobs):
            gpus.put(i % torch.cuda.device_count())
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=init_worker, initargs=(threads, gpus)
    ) as pool:
        futures: set[Any]
        if streams:  # deepest first, dealt round-robin: each process gets a like share of work
            groups = [[(c, exp_dir / cell_name(c)) for c in todo[i::jobs]] for i in range(jobs)]
            futures = {pool.submit(run_cells_on_streams, g, runs_per_gpu) for g in groups}
        else:
            futures = {pool.submit(run_cell, cfg, exp_dir / cell_name(cfg)) for cfg in todo}
        drive(exp_dir, PoolPending(pool, futures), finished, progress)


def no_workers(ctx) -> str | None:
    """Why a pool of worker processes cannot start (its locks need POSIX semaphores, which live in
    /dev/shm), or None when it can."""
    try:
        ctx.Lock()
    except (OSError, ImportError) as e:
        return getattr(e, "strerror", None) or str(e)
    return None


class PoolPending:
    """The local backend's submitted cells: futures of a process pool (a future of a process
    training several cells on streams gives their outcomes together)."""

    def __init__(self, pool: ProcessPoolExecutor, futures: set):
        self.pool, self.futures = pool, futures

    def left(self) -> int:
        return len(self.futures)

    def wait(self) -> list[Outcome]:
        complete, self.futures = wait(self.futures, timeout=0.2, return_when=FIRST_COMPLETED)
        results = [f.result() for f in complete if not f.cancelled()]
        return [o for r in results for o in (r if isinstance(r, list) else [r])]

    def cancel(self) -> int:
        cancelled = sum(f.cancel() for f in self.futures)
        self.futures = {f for f in self.futures if not f.cancelled()}
        signal_workers(self.pool, signal.SIGTERM)  # they may not have had it (SIGINT to the driver alone)
        return cancelled

    def kill(self) -> None:
        signal_workers(self.pool, signal.SIGKILL)
        self.pool.shutdown(wait=False, cancel_futures=True)
