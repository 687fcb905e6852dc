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
