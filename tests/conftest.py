import os
import subprocess
import sys

import pytest

from reslab.config import TrainConfig


def small(**kw) -> TrainConfig:
    """A run that trains in a second or two: ResNet-8 on 8x8 synthetic images, fp32 on the CPU."""
    base = dict(arch="resnet", depth=8, dataset="synthetic", iterations=24, batch_size=32, eval_every=6)
    return TrainConfig(**{**base, "precision": "fp32", "device": "cpu", **kw})


def tiny_data():
    """256 training and 64 test images of 3x8x8, the data `small()` runs train on."""
    from reslab.data import make_synthetic

    return make_synthetic(256, 64, (3, 8, 8))


def run_cli(*args, cwd=None, timeout=900):
    """`python -m reslab ARGS` in a subprocess, as a user would run it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "reslab", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


# The CLI and configurations of the trust tests (bad input, damaged files, foreign folders).
EXP_QUICK = ["--dataset", "digits", "--iterations", "4", "--batch-size", "32"]
QUICK = [*EXP_QUICK, "--no-progress"]
quiet = lambda *_: None  # noqa: E731


def cfg(**kw) -> TrainConfig:
    """plain-8 on the digits, 4 iterations, fp32 on the CPU."""
    base = dict(dataset="digits", iterations=4, batch_size=32, precision="fp32", device="cpu", arch="plain", depth=8)
    return TrainConfig(**{**base, **kw})


def refused(capsys, argv, *phrases):
    """The CLI says one sentence and exits 2 (an uncaught exception fails the test with its traceback)."""
    from reslab.cli import main

    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    for p in phrases:
        assert p in err, err
    return err


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One finished run (cfg()), shared by the tests that only read it."""
    from reslab.train import train

    out = tmp_path_factory.mktemp("trained") / "r"
    train(cfg(), out, progress=False)
    return out


def copy_run(trained, tmp_path):
    """A copy of the shared run that a test may damage."""
    import shutil

    shutil.copytree(trained, tmp_path / "r")
    return tmp_path / "r"
