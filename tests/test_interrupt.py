"""Ctrl-C, SIGTERM and a killed driver stop a whole experiment: queued cells never start, running
cells save a checkpoint, the driver says how to resume and exits 130 (issue 15, item 8)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from reslab import runs

# Three cells, long enough never to finish during a test; two workers, so one cell waits in the queue.
GRID = [
    "experiment", "degradation", "--archs", "plain,resnet", "--depths", "8,14", "--dataset", "digits",
    "--batch-size", "32", "--iterations", "200000", "--eval-every", "100000", "--precision", "fp32", "--compile", "off",
]  # fmt: skip
CELLS = ["plain-8-seed0", "plain-14-seed0", "resnet-8-seed0", "resnet-14-seed0"]


def start(out, jobs, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "reslab", *GRID, "--jobs", str(jobs), "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def running(out, count, proc, timeout=240):
    """Wait until `count` cells are training (past their first steps); returns their status."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        found = {}
        for name in CELLS:
            try:
                s = runs.read_status(out / name)
            except Exception:
                continue
            if s["state"] == "running" and "pid" in s:
                found[name] = s
        if len(found) >= count:
            time.sleep(3)  # into the training loop
            return found
        time.sleep(0.5)
    pytest.fail(f"{count} cells did not start training within {timeout} s")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(proc, sig=signal.SIGINT) -> str:
    """Signal the driver; it must exit 130 with one message saying how to resume. Returns stderr."""
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Resume with the same command" in stderr
    return stderr


def check_stopped(out, started):
    """The started cells saved a checkpoint and say so; no other cell began; no worker lives on."""
    for name, s in started.items():
        status = runs.read_status(out / name)
        assert status["state"] == "interrupted", (name, status)
        assert (out / name / "checkpoint.pt").exists()
        deadline = time.perf_counter() + 20
        while alive(s["pid"]) and time.perf_counter() < deadline:
            time.sleep(0.2)
        assert not alive(s["pid"]), f"worker of {name} lives on"
    others = [n for n in CELLS if n not in started and (out / n / "config.json").exists()]
    assert others == [], f"queued cells started: {others}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c-to-driver-alone", "sigterm"])
def test_a_signal_to_the_driver_stops_the_whole_grid(tmp_path, sig):
    out = tmp_path / "exp"
    proc = start(out, jobs=2)
    started = running(out, 2, proc)
    t0 = time.perf_counter()
    stop(proc, sig)  # to the driver alone: the workers hear of it only from the driver
    assert time.perf_counter() - t0 < 60
    check_stopped(out, started)


def test_ctrl_c_in_a_one_process_grid_does_not_start_the_next_cell(tmp_path):
    out = tmp_path / "exp"
    proc = start(out, jobs=1)
    started = running(out, 1, proc)
    stop(proc)
    check_stopped(out, started)


def test_ctrl_c_stops_cells_sharing_a_process_on_streams(tmp_path):
    """--share-gpu streams: two cells train on threads of one worker, two wait for a thread; a
    Ctrl-C checkpoints the two and starts neither of the others."""
    out = tmp_path / "exp"
    proc = start(out, 1, "--share-gpu", "streams", "--runs-per-gpu", "2")
    started = running(out, 2, proc)
    assert len({s["pid"] for s in started.values()}) == 1  # one process
    stderr = stop(proc)
    assert "2 running cell(s) saved a checkpoint" in stderr and "2 not started" in stderr
    check_stopped(out, started)


@pytest.mark.parametrize("twice", [False, True], ids=["only-the-death", "signalled-twice"])
def test_workers_of_a_killed_driver_checkpoint_and_exit(tmp_path, twice):
    """Nothing tells the workers but the driver's death (the kernel's PDEATHSIG, their watchdog),
    or a dying process group signals them too: either way the running cells checkpoint and no
    process lives on."""
    out = tmp_path / "exp"
    proc = start(out, jobs=2)
    started = running(out, 2, proc)
    proc.kill()  # the driver dies at once
    try:  # the workers hold its output pipes: they end when the last of them has exited
        proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        for s in started.values():
            os.kill(s["pid"], signal.SIGKILL)
        pytest.fail("the workers of the killed driver live on")
    for s in started.values() if twice else []:
        try:
            os.kill(s["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.perf_counter() + 60
    while any(alive(s["pid"]) for s in started.values()) and time.perf_counter() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # a queued cell would start now if a worker lived on
    check_stopped(out, started)


def test_ctrl_c_while_compiling_stops_at_once(tmp_path):
    """Compiling the first step takes ~20 s for ResNet-8 on this 2-core CPU (a fresh compiler cache);
    a Ctrl-C during it must not wait for the compile to finish."""
    out = tmp_path / "r"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "reslab", "train", "--depth", "8", "--dataset", "digits", "--iterations", "20",
           "--batch-size", "32", "--precision", "fp32", "--compile", "on", "--no-progress",
           "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if "compiling the training step" in line:
            break
    time.sleep(2)  # inside the compile
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert time.perf_counter() - t0 < 8, f"took {time.perf_counter() - t0:.0f} s to stop"
    assert "while compiling" in stderr and "Traceback" not in stderr
    assert runs.read_status(out)["state"] == "interrupted"


def test_ctrl_c_stops_a_grid_on_the_ray_backend(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "exp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "reslab", *GRID, "--backend", "ray", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    started = running(out, 2, proc)  # Ray sees 2 CPUs here: two cells run, two wait
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)  # before: ignored for minutes, the tasks trained on
    stdout, stderr = proc.communicate(timeout=120)
    assert time.perf_counter() - t0 < 60
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Resume with the same command" in stderr
    check_stopped(out, started)
