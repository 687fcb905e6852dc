"""Permissions and a full disk, as a user meets them: root reads and writes anywhere, so these run
reslab as an unprivileged user (setpriv) when the tests run as root, and fill a small tmpfs."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import cfg
from test_data import image_folder

from reslab.train import train

NOBODY = 65534


def reslab_as_user(*args, home: Path) -> subprocess.CompletedProcess:
    """`python -m reslab ARGS`, as an unprivileged user when the tests run as root."""
    cmd = [sys.executable, "-m", "reslab", *map(str, args)]
    if os.geteuid() == 0:
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def shared_dir():
    """A folder both root and the unprivileged user reach (pytest's own are root's alone)."""
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no way to run reslab as an unprivileged user here")
        probe = subprocess.run(
            [
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                sys.executable,
                "-c",
                "import reslab",
            ],
            capture_output=True,
        )
        if probe.returncode != 0:
            pytest.skip(f"the unprivileged user cannot import reslab here ({probe.stderr.decode()[-200:]})")
    d = Path(tempfile.mkdtemp(prefix="reslab-perm-"))
    d.chmod(0o777)
    (d / "home").mkdir(mode=0o777)
    (d / "home").chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def one_sentence(done: subprocess.CompletedProcess, *phrases):
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("reslab: error:") == 1, done.stderr
    for p in phrases:
        assert p in done.stderr, done.stderr


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_unreadable_image_is_one_sentence(shared_dir):
    from PIL import Image

    folder = shared_dir / "images"
    image_folder(folder, lambda p, i: Image.new("L", (8, 8), 10 * i).save(p))
    for p in folder.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    folder.chmod(0o755)
    (folder / "train" / "a" / "0.png").chmod(0)
    out = shared_dir / "run"
    done = reslab_as_user(
        "train", "--dataset", f"imagefolder:{folder}", "--depth", "8", "--iterations", "2", "--no-progress",
        "--out", out, home=shared_dir / "home",
    )  # fmt: skip
    one_sentence(done, "0.png", "ermission denied")
    assert not out.exists()


def test_a_read_only_run_directory_loses_nothing(shared_dir):
    run = shared_dir / "run"
    train(cfg(), run, progress=False)
    for p in [run, *run.iterdir()]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    before = snapshot(run)
    home = shared_dir / "home"
    resumed = reslab_as_user(
        "train", "--config", run / "config.json", "--iterations", "8", "--out", run, "--resume", "--no-progress",
        home=home,
    )  # fmt: skip
    one_sentence(resumed, str(run))
    one_sentence(reslab_as_user("report", run, home=home), "ermission denied")
    assert snapshot(run) == before


def test_an_unwritable_out_is_one_sentence(shared_dir):
    ro = shared_dir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for command in (["train", "--depth", "8", "--no-progress"], ["experiment", "degradation", "--depths", "8"]):
        done = reslab_as_user(
            *command, "--dataset", "digits", "--iterations", "2", "--out", ro / "r", home=shared_dir / "home"
        )
        one_sentence(done, "cannot write")
    assert list(ro.iterdir()) == []


@pytest.fixture
def small_disk():
    """A 1 MiB tmpfs, mounted for the test (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    where = Path(tempfile.mkdtemp(prefix="reslab-full-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"this machine does not let a test mount a tmpfs ({done.stderr.decode().strip()[-120:]})")
    yield where
    subprocess.run(["umount", str(where)], check=False)
    where.rmdir()


def test_a_full_disk_is_one_sentence_and_loses_nothing(tmp_path, small_disk):
    from reslab.cli import main

    run = tmp_path / "r"
    train(cfg(arch="resnet"), run, progress=False)
    shutil.copytree(run, small_disk / "r")
    used = sum(p.stat().st_size for p in (small_disk / "r").iterdir())
    (small_disk / "filler").write_bytes(b"\0" * (2**20 - used - 64 * 1024))  # 64 KB left: no room for figures
    before = snapshot(small_disk / "r")
    done = subprocess.run(
        [sys.executable, "-m", "reslab", "report", str(small_disk / "r")], capture_output=True, text=True, timeout=300
    )
    one_sentence(done, "Free some disk space")
    after = snapshot(small_disk / "r")
    assert {k: after[k] for k in before} == before
    assert not [p for p in (small_disk / "r").rglob("*") if p.name.startswith(".reslab-tmp-")]
    # training that runs out of room stops with a sentence; with room again, it resumes
    shutil.rmtree(small_disk / "r")
    (small_disk / "filler").unlink()
    (small_disk / "filler").write_bytes(b"\0" * (2**20 - 200 * 1024))  # room for all but the checkpoint
    argv = ["train", "--arch", "resnet", "--depth", "8", "--dataset", "digits", "--iterations", "4", "--batch-size",
            "32", "--precision", "fp32", "--no-progress", "--out", str(small_disk / "r2")]  # fmt: skip
    assert main(argv) == 2
    assert not [p for p in (small_disk / "r2").rglob("*") if p.name.startswith(".reslab-tmp-")]
    (small_disk / "filler").unlink()
    assert main([*argv, "--resume"]) == 0
