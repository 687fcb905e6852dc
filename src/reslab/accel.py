"""Where and how fast a run trains, never what it learns: the device, the precision (bf16
autocast), the host allocator, torch.compile, and the environment recorded with a run."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform
import shlex
import shutil
import sys
from pathlib import Path
from typing import cast

import torch

from reslab._version import __version__
from reslab.errors import UserError, one_line

# torch.compile costs about 40 s per network on a 2-core CPU the first time (cached after) and
# saves 1-8% per iteration there (benchmarks/results/speed_cpu.md): worth it only for long runs.
COMPILE_FROM = 4000  # iterations


@functools.cache  # once per process
def keep_freed_memory() -> None:
    """Keep freed activations in glibc's heap instead of returning them to the kernel.

    By default glibc maps large blocks (its threshold adapts between 128 KiB and 32 MiB) and trims
    the heap's free top, giving the memory back; every training step then page-faults its
    activations in again (about 5,000 faults per ResNet-20 step at batch 128, some 5% of the
    step). Large fixed thresholds keep them; the process holds on to its peak memory, which a
    training run needs again at the next step anyway.
    """
    if platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass  # an unusual libc: run with its defaults


def compiler_missing(device: torch.device) -> str | None:
    """Why torch.compile cannot run here, or None when it can."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed"
    from torch._inductor import config

    return None if shutil.which(config.cpp.cxx[-1] or "g++") else "no C++ compiler (g++) was found"


def resolve_compile(choice: str, total: int, device: torch.device, distributed: bool) -> bool:
    """auto: compile runs of at least COMPILE_FROM iterations, one process, where a compiler exists;
    on: compile, or say why it cannot."""
    if choice == "off":
        return False
    if choice == "on":
        if why := compiler_missing(device):
            raise UserError(f"--compile on cannot work here: {why}. Use --compile off (or auto).")
        return True
    return total >= COMPILE_FROM and not distributed and compiler_missing(device) is None


def compiler_works(device: torch.device) -> str | None:
    """Compile a one-line function: None when that works, else the first line of the error."""
    try:
        torch.compile(lambda x: torch.relu(x) + 1, dynamic=False)(torch.ones(8, device=device))
    except Exception as e:  # noqa: BLE001 - whatever the compiler stack raises, we train eagerly
        return one_line(e)
    return None


def compiled(net: torch.nn.Module, strict: bool, device: torch.device) -> torch.nn.Module:
    """The network to train with: compiled (the same parameters and buffers) or, where compiling
    fails and not `strict` (compile=auto), as it is, with one line saying why."""
    if not strict:
        if why := compiler_works(device):
            logging.getLogger(__name__).warning(f"torch.compile does not work here ({why}); training without it")
            return net
        from torch import _dynamo

        _dynamo.config.suppress_errors = True  # a later failure falls back to eager too
    return cast(torch.nn.Module, torch.compile(net, dynamic=False))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}': use auto, cpu or cuda[:N].") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"reslab trains on cpu or cuda[:N], not on '{name}'.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but this PyTorch sees no GPU; use --device cpu.")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0.")
    return dev


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # bf16 autocast only pays on CPUs with native bf16 dot products (AVX-512 BF16, AMX).
    return "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def environment(device: torch.device) -> dict:
    import numpy

    env = {
        "reslab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    env["cpu"] = cpu_model()
    env["command"] = command_line()
    if commit := git_commit():
        env["git_commit"] = commit
    return env


def command_line() -> str:
    """The command that ran, as one would type it again ("reslab ..." for the CLI and python -m)."""
    argv = list(sys.argv) or ["python"]
    if Path(argv[0]).name == "reslab" or argv[0].endswith(("reslab/__main__.py", "reslab\\__main__.py")):
        argv[0] = "reslab"
    return shlex.join(argv)[:2000]


def cpu_model() -> str:
    """The CPU's model name where the system says it (Linux), else its architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The commit of reslab's source when it runs from a git checkout ('+' when it has changes)."""
    import subprocess

    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", src, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", src, "status", "--porcelain", "--untracked-files=no", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+" if dirty else "")
