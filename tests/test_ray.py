"""The Ray backend on a real local Ray instance (ray.init(num_cpus=2)), started by these tests."""

import logging
import os
import signal
import sys
import threading
import time

import pytest
import torch

from reslab import runs
from reslab.config import TrainConfig
from reslab.errors import UserError
from reslab.experiment import LocalBackend, grid, run_experiment
from reslab.ray_backend import RayBackend

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'reslab[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def cells(archs=("plain", "resnet"), **kw):
    base = dict(dataset="digits", depth=8, batch_size=64, iterations=30, eval_every=10, precision="fp32", device="cpu")
    return grid(TrainConfig(**{**base, **kw}), list(archs), [8], [0])


def strip(rows):
    return [{k: v for k, v in r.items() if k not in runs.TIMING_FIELDS} for r in rows]


def kill_when_running(run_dir, after_iteration):
    """SIGKILL the process training run_dir once it has evaluated at `after_iteration`."""
    deadline = time.time() + 180
    while time.time() < deadline:
        s = runs.read_status(run_dir) if (run_dir / "status.json").exists() else {}
        if s.get("state") == "running" and s.get("iteration", 0) >= after_iteration and "pid" in s:
            os.kill(s["pid"], signal.SIGKILL)
            return s
        time.sleep(0.02)
    raise AssertionError(f"{run_dir} never got to iteration {after_iteration}")


def test_ray_and_local_backends_write_the_same_experiment(local_ray, tmp_path, caplog):
    on_ray = run_experiment(tmp_path / "ray", cells(), backend=RayBackend())
    local = run_experiment(tmp_path / "local", cells(), backend=LocalBackend(2))  # one thread per run, as on Ray
    assert [o.state for o in on_ray] == [o.state for o in local] == ["finished", "finished"]
    assert (tmp_path / "ray" / "summary.csv").read_text() == (tmp_path / "local" / "summary.csv").read_text()
    for name in ("plain-8-seed0", "resnet-8-seed0"):
        a, b = tmp_path / "ray" / name, tmp_path / "local" / name
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        assert strip(runs.read_metrics(a)) == strip(runs.read_metrics(b))
    # Running it again trains nothing.
    with caplog.at_level(logging.INFO, logger="reslab"):
        again = run_experiment(tmp_path / "ray", cells(), backend=RayBackend())
    assert all(o.skipped for o in again) and "2 of 2 runs already finished; 0 to run" in caplog.messages


def test_worker_killed_mid_run_is_retried_and_loses_nothing(local_ray, tmp_path):
    long = cells(archs=("resnet",), iterations=300, eval_every=20, batch_size=128)
    reference = threading.Thread(
        target=run_experiment, args=(tmp_path / "ref", long), kwargs=dict(backend=RayBackend())
    )
    reference.start()
    outcome = {}
    driver = threading.Thread(
        target=lambda: outcome.update(o=run_experiment(tmp_path / "exp", long, backend=RayBackend()))
    )
    driver.start()
    killed = kill_when_running(tmp_path / "exp" / "resnet-8-seed0", 40)
    driver.join(300)
    reference.join(300)
    assert outcome["o"][0].state == "finished"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)  # that worker really died; Ray ran the cell again elsewhere
    run_dir, ref_dir = tmp_path / "exp" / "resnet-8-seed0", tmp_path / "ref" / "resnet-8-seed0"
    assert strip(runs.read_metrics(run_dir)) == strip(runs.read_metrics(ref_dir))
    assert len(runs.read_metrics(run_dir)) == 15
    from safetensors.torch import load_file

    a, b = load_file(run_dir / "model.safetensors"), load_file(ref_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cell_that_fails_for_good_is_reported_and_the_rest_go_on(local_ray, tmp_path, caplog):
    grid_cells = cells(iterations=300, eval_every=20, batch_size=128)
    outcome: dict = {}
    driver = threading.Thread(
        target=lambda: outcome.update(
            o=run_experiment(tmp_path, grid_cells, backend=RayBackend(retries=0), progress_every=0.5)
        )
    )
    caplog.set_level(logging.INFO, logger="reslab")
    driver.start()
    kill_when_running(tmp_path / "plain-8-seed0", 40)
    driver.join(300)
    states = {o.name: o.state for o in outcome["o"]}
    assert states == {"plain-8-seed0": "failed", "resnet-8-seed0": "finished"}
    assert "worker died 1 time(s)" in next(o.message for o in outcome["o"] if o.state == "failed")
    assert runs.read_status(tmp_path / "plain-8-seed0")["state"] == "failed"
    assert any(
        line.startswith("progress: ") and "running: " in line for line in caplog.messages
    )  # the driver showed the grid
    summary = (tmp_path / "summary.csv").read_text()
    assert "plain,8" in summary and "failed" in summary
    kept = runs.read_metrics(tmp_path / "plain-8-seed0")
    assert len(kept) >= 2

    caplog.clear()
    again = run_experiment(tmp_path, grid_cells, backend=RayBackend())
    assert "1 of 2 runs already finished; 1 to run" in caplog.messages
    assert [o.state for o in again] == ["finished", "finished"]
    rows = runs.read_metrics(tmp_path / "plain-8-seed0")
    assert len(rows) == 15 and strip(rows[: len(kept)]) == strip(kept)  # resumed, not restarted


def test_without_ray_the_backend_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as when it is not installed
    with pytest.raises(UserError, match=r"pip install 'reslab\[ray\]'"):
        run_experiment(tmp_path / "exp", cells(), backend=RayBackend())
    assert not (tmp_path / "exp").exists()
