"""The speed settings (reslab.accel): they change how fast a run trains, not what it learns."""

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from reslab import accel
from reslab.data import make_synthetic
from reslab.train import TrainConfig, train

CPU = torch.device("cpu")


def test_compile_is_chosen_for_long_single_process_runs_only():
    has_compiler = accel.compiler_missing(CPU) is None
    assert accel.resolve_compile("auto", 64_000, CPU, distributed=False) == has_compiler
    assert accel.resolve_compile("auto", accel.COMPILE_FROM - 1, CPU, distributed=False) is False
    assert accel.resolve_compile("auto", 64_000, CPU, distributed=True) is False
    assert accel.resolve_compile("on", 10, CPU, distributed=True) is True
    assert accel.resolve_compile("off", 64_000, CPU, distributed=False) is False


@pytest.mark.skipif(accel.compiler_missing(CPU) is not None, reason="torch.compile needs g++ on a CPU")
def test_compiled_training_matches_eager(tmp_path):
    """fp32, so that the only difference is the compiled kernels' order of summation: after 12
    iterations the weights differ by 5e-4 (relative), about what 1 against 2 threads gives
    eagerly (2e-4); another seed differs by about 1."""
    data = make_synthetic(256, 64, (3, 8, 8))
    base = dict(arch="resnet", depth=8, dataset="synthetic", iterations=12, batch_size=32, eval_every=6)
    rows = {}
    for mode in ("off", "on"):
        cfg = TrainConfig(**base, precision="fp32", device="cpu", compile=mode)
        rows[mode] = train(cfg, tmp_path / mode, data=data, progress=False, log=None)
    from safetensors.torch import load_file

    eager, compiled = (
        load_file(tmp_path / "off" / "model.safetensors"),
        load_file(tmp_path / "on" / "model.safetensors"),
    )
    assert sorted(eager) == sorted(compiled)  # the checkpoint names the plain network's tensors
    num = sum(((eager[k].double() - compiled[k].double()) ** 2).sum() for k in eager if eager[k].is_floating_point())
    den = sum((eager[k].double() ** 2).sum() for k in eager if eager[k].is_floating_point())
    assert (num / den).sqrt() < 2e-3
    assert rows["on"]["train_loss"] == pytest.approx(rows["off"]["train_loss"], rel=1e-4)
    assert json.loads((tmp_path / "on" / "config.json").read_text())["resolved"]["compile"] is True
    assert json.loads((tmp_path / "off" / "config.json").read_text())["resolved"]["compile"] is False


FAULTS = """
import resource, torch
import torch.nn.functional as F
from reslab import accel
from reslab.models import ModelConfig, build_model
model = build_model(ModelConfig("resnet", 8))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
def faults_per_step(n=3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n
faults_per_step()
default = faults_per_step()
accel.keep_freed_memory()
faults_per_step()  # the heap grows to the step's peak once
print(default, faults_per_step(n=5))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_freed_activations_are_not_page_faulted_in_again():
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True).stdout
    default, kept = map(float, out.split())
    # Measured: 4,000-18,000 page faults per ResNet-8 training step with glibc's defaults, 0-1,100 after.
    assert default > 2000, out
    assert kept < default / 4  # measured 10x to 70,000x fewer


def test_compile_on_without_a_compiler_is_refused_before_anything_is_written(tmp_path):
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler")}
    args = ["train", "--dataset", "digits", "--depth", "8", "--iterations", "5", "--compile", "on"]
    r = subprocess.run(
        [sys.executable, "-m", "reslab", *args, "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2, r.stderr
    assert "--compile on cannot work here: no C++ compiler" in r.stderr
    assert not (tmp_path / "run").exists()
