"""The Ray backend: each cell of a grid is a Ray task on a cluster (or a local Ray instance).

Ray schedules the tasks by their resource request (a GPU, a fraction of one, or CPUs) and
retries a task whose worker died; the retried task finds the run directory with its checkpoint
and resumes it, so nothing but the steps since the last evaluation is recomputed. The run
directories must be on storage that every node sees (the experiment directory is given to the
tasks as an absolute path).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from reslab import runs
from reslab.cells import NOT_STARTED, Outcome
from reslab.errors import UserError


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(
            "--backend ray needs Ray, which is not installed: pip install 'reslab[ray]' "
            "(on the driver and on every node of the cluster)."
        ) from None
    return ray


@contextmanager
def cluster(address: str | None):
    """Ray, joined to the cluster at `address` (or a local instance started here and stopped
    again at the end); an instance the caller already started is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address and address != "auto":
        reachable(address)
    try:
        # A local instance needs no dashboard; a cluster keeps whatever its head was started with.
        local = {"include_dashboard": False} if address is None else {}
        ray.init(address=address, log_to_driver=False, **local)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise UserError(
            f"could not connect to {where} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); start it "
            "with `ray start --head` on the head node, or leave out --address to start one here. A cluster with "
            "token authentication (the default of `ray start` since Ray 2.59) also needs RAY_AUTH_MODE=token here, "
            "and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN."
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def reachable(address: str) -> None:
    """Fail at once with a sentence if nothing listens at HOST:PORT (Ray itself keeps retrying
    an unreachable address for minutes without a word)."""
    import socket

    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host or hostport, int(port) if port.isdigit() else 6379), timeout=10).close()
    except OSError as e:
        raise UserError(
            f"nothing answers at the Ray address {address} ({e.strerror or e}); check the address, or start the "
            "cluster with `ray start --head` on the head node."
        ) from None


def resources(ray, runs_per_gpu: int, cpus_per_run: int | None) -> dict:
    """A cell's request: a 1/runs_per_gpu share of a GPU on a cluster with GPUs, else CPUs."""
    gpus = ray.cluster_resources().get("GPU", 0)
    return {"num_gpus": 1 / runs_per_gpu if gpus else 0, "num_cpus": cpus_per_run or 1}


def cell_task(cfg, run_dir: str, threads: int) -> Outcome:
    """What a Ray worker runs: one cell, on as many threads as CPUs it was given."""
    import torch

    from reslab.cells import run_cell

    torch.set_num_threads(max(1, threads))
    return run_cell(cfg, Path(run_dir))


def run(exp_dir: Path, todo: list, finished, progress, runs_per_gpu=1, cpus_per_run=None, retries=3):
    """Submit every cell as a task and report each outcome to `finished` as it arrives;
    `progress()` is called while waiting, so the driver shows the whole grid. Ctrl-C (or SIGTERM)
    cancels the tasks: queued ones never start, and running ones get SIGINT from Ray, which makes
    them save a checkpoint; then ExperimentInterrupted is raised."""
    import ray

    from reslab.cells import cell_name, drive

    request = resources(ray, runs_per_gpu, cpus_per_run)
    task = ray.remote(cell_task).options(max_retries=retries, retry_exceptions=False, **request)
    root = os.path.abspath(exp_dir)
    refs = {task.remote(cfg, os.path.join(root, cell_name(cfg)), request["num_cpus"]): cfg for cfg in todo}
    drive(exp_dir, RayPending(ray, refs, root, retries), finished, progress)


class RayPending:
    """The Ray backend's submitted cells: task references."""

    def __init__(self, ray, refs: dict, root: str, retries: int):
        self.ray, self.refs, self.root, self.retries = ray, refs, root, retries

    def left(self) -> int:
        return len(self.refs)

    def wait(self) -> list[Outcome]:
        # Short waits: Ray blocks signals' effect until it returns, and a Ctrl-C must act at once.
        ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=0.5)
        return [outcome_of(self.ray, ref, self.refs.pop(ref), self.root, self.retries) for ref in ready]

    def cancel(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref)  # a running task gets SIGINT: reslab's stop request, a checkpoint
        return None  # how many never started is known only as their outcomes arrive

    def kill(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)


def outcome_of(ray, ref, cfg, exp_dir: str, retries: int) -> Outcome:
    """A finished task's outcome; a cancelled one was not started; a task whose worker died more
    often than it may be retried is marked failed."""
    from reslab.cells import cell_name

    run_dir = Path(exp_dir) / cell_name(cfg)
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return Outcome(run_dir.name, "not started", NOT_STARTED)
    except Exception as e:
        message = (
            f"its worker died {retries + 1} time(s) ({type(e).__name__}); run the same command again "
            "to resume it from its last checkpoint"
        )
        if runs.owner(run_dir) == "run":
            runs.write_status(run_dir, "failed", message)
        return Outcome(run_dir.name, "failed", message)


class RayBackend:
    """The cells as tasks on a Ray cluster (joined at `address`, or a local one)."""

    def __init__(self, address: str | None = None, runs_per_gpu: int = 1, cpus_per_run=None, retries: int = 3):
        import_ray()  # says how to install it before anything is loaded or written
        self.address, self.runs_per_gpu, self.cpus_per_run, self.retries = address, runs_per_gpu, cpus_per_run, retries

    def joined(self):
        return cluster(self.address)

    def run(self, exp_dir: Path, todo: list, finished, progress) -> None:
        run(exp_dir, todo, finished, progress, self.runs_per_gpu, self.cpus_per_run, self.retries)
