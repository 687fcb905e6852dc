"""One cell of an experiment, trained in a worker (a local process or a Ray task), and the
driver's side of stopping a grid: what both backends share."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reslab import files, runs
from reslab.config import TrainConfig
from reslab.errors import ExperimentInterrupted, UserError
from reslab.log import silenced
from reslab.signals import DriverSignals, StopRequest


def cell_name(cfg: TrainConfig) -> str:
    return f"{cfg.arch}-{cfg.depth}-seed{cfg.seed}"


@dataclass
class Outcome:
    """What became of one cell: `state` is finished, failed, busy (another process trains it),
    diverged, interrupted or not started; `row` is a finished run's final metrics; `skipped`, a
    cell that was finished before this experiment started."""

    name: str
    state: str
    message: str = ""
    seconds: float = 0.0
    row: dict | None = None
    skipped: bool = False


NOT_STARTED = "the experiment was stopped"


class Busy:
    """How many cells this worker process is training (several at once when they share a GPU
    on streams); the watchdog waits for none before it exits."""

    def __init__(self):
        self.count, self.lock = 0, threading.Lock()

    def __enter__(self):
        with self.lock:
            self.count += 1

    def __exit__(self, *exc):
        with self.lock:
            self.count -= 1

    def is_set(self) -> bool:
        return self.count > 0


BUSY = Busy()


def init_worker(threads: int, gpus) -> None:
    """Pin a worker process to its share of the machine: some CPU threads, or one GPU; and make
    it stop (saving a checkpoint) and exit when the driver dies, instead of living on as an orphan."""
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


def run_cell(cfg: TrainConfig, run_dir: Path) -> Outcome:
    """Train one cell (resuming it if it was interrupted); never raises, returns its outcome. A
    worker asked to stop before the cell began does not start it."""
    if StopRequest.early is not None:
        return Outcome(run_dir.name, "not started", NOT_STARTED)
    with BUSY:
        return train_cell(cfg, run_dir)


def run_cells_on_streams(cells: list[tuple[TrainConfig, Path]], k: int) -> list[Outcome]:
    """Train `cells` in this process, k at a time, each in its own thread on its own CUDA stream
    (`--share-gpu streams`): with CUDA graphs a step is one launch, so k Python threads can keep
    one GPU busy without k processes time-slicing it. torch.compile is not thread-safe: these
    cells train without it (a speed setting; what they learn is the same)."""
    import dataclasses
    from concurrent.futures import ThreadPoolExecutor

    import torch

    def one(cell: tuple[TrainConfig, Path]) -> Outcome:
        cfg, run_dir = dataclasses.replace(cell[0], compile="off"), cell[1]
        if not torch.cuda.is_available():
            return run_cell(cfg, run_dir)
        with torch.cuda.stream(torch.cuda.Stream()):
            return run_cell(cfg, run_dir)

    with ThreadPoolExecutor(max_workers=max(1, k)) as pool:
        return list(pool.map(one, cells))


def train_cell(cfg: TrainConfig, run_dir: Path) -> Outcome:
    from reslab.train import Diverged, Interrupted, train

    t0 = time.perf_counter()

    def failed(message: str) -> Outcome:
        # Only ever a status of reslab's own run, never a stranger's file.
        if run_dir.is_dir() and runs.owner(run_dir) == "run":
            runs.write_status(run_dir, "failed", message)
        return Outcome(run_dir.name, "failed", message, time.perf_counter() - t0)

    try:
        resume = runs.is_run_dir(run_dir)
        with silenced("reslab.train", "reslab.progress"):  # the grid speaks for its cells
            row = train(cfg, run_dir, resume=resume, progress=False)
        return Outcome(run_dir.name, "finished", seconds=time.perf_counter() - t0, row=row)
    except files.Locked as e:  # another process is training it: its status is that process's to write
        return Outcome(run_dir.name, "busy", str(e), time.perf_counter() - t0)
    except (Diverged, Interrupted) as e:
        state = "diverged" if isinstance(e, Diverged) else "interrupted"
        return Outcome(run_dir.name, state, str(e), time.perf_counter() - t0)
    except UserError as e:
        return failed(str(e))
    except Exception as e:  # a bug in one cell must not stop the others; its status says what happened
        return failed(f"{type(e).__name__}: {e}")


def stopped_message(exp_dir: Path, outcomes: list[Outcome], cancelled: int) -> str:
    """What a stop left: the cells that saved a checkpoint, and how many never started."""
    saved = [o.name for o in outcomes if o.state == "interrupted"]
    not_started = cancelled + sum(o.state == "not started" for o in outcomes)
    return (
        f"experiment stopped: {len(saved)} running cell(s) saved a checkpoint"
        + (f" ({', '.join(saved)})" if saved else "")
        + f", {not_started} not started. "
        f"Resume with the same command: it skips the finished cells of {exp_dir} and resumes the others."
    )


class Pending(Protocol):
    """The cells a backend has submitted and not yet reported."""

    def left(self) -> int: ...  # submitted cells not reported yet

    def wait(self) -> list[Outcome]: ...  # the outcomes that arrived within a short wait

    def cancel(self) -> int | None: ...  # first stop: queued cells never start, running ones stop

    def kill(self) -> None: ...  # second stop: everything ends at once


def drive(exp_dir: Path, pending: Pending, finished, progress) -> None:
    """The driver's loop, for every backend: report each outcome as it arrives, show the grid's
    progress while waiting, and stop on Ctrl-C or SIGTERM: the first stops gracefully (queued
    cells never start, running ones checkpoint), a second at once. Raises ExperimentInterrupted
    when stopped."""
    outcomes: list[Outcome] = []
    cancelled: int | None = 0
    with DriverSignals() as stop:
        while pending.left():
            for outcome in pending.wait():
                outcomes.append(outcome)
                finished(outcome)
            if stop.first():
                cancelled = pending.cancel()
                stop.say_stopping(cancelled)
            elif stop.again():
                pending.kill()
                raise stop.at_once(exp_dir)
            progress()
    if stop.count:
        raise ExperimentInterrupted(stopped_message(Path(exp_dir), outcomes, cancelled or 0))


def signal_workers(pool, signum: int) -> None:
    """Send `signum` to every worker process of a local pool."""
    for proc in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)


def describe_outcome(o: Outcome, done: int, total: int, elapsed: float) -> str:
    head = f"[{done}/{total}] {o.name}"
    if o.state == "finished" and o.row is not None:
        return (
            f"{head}: training error {o.row['train_error']:.1%}, test error {o.row['test_error']:.1%} "
            f"({o.seconds:.0f} s; {elapsed:.0f} s so far)"
        )
    return f"{head}: {o.state}: {o.message}"
