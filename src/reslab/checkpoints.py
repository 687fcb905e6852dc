"""Checkpoints and weights: a run's resumable state (checkpoint.pt, loaded without unpickling
anything but tensors and plain containers) and its final weights (model.safetensors)."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

from reslab import files
from reslab.errors import UserError, one_line
from reslab.files import atomic_write_bytes

# The largest checkpoint or weights file reslab reads: its CIFAR networks need a few MB (ResNet-110
# with its momentum buffers, about 14 MB), so anything near this is not one of them.
MAX_BYTES = 2**30


def save_checkpoint(out: Path, state: dict) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(out) / "checkpoint.pt", buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """A checkpoint, loaded without unpickling anything but tensors and plain containers."""
    try:
        return safe_torch_load(path)
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"{path} cannot be loaded safely ({load_failure(e)}). It is truncated, damaged, or holds objects "
            "other than tensors, which reslab never unpickles; delete it to restart the run."
        ) from None


def safe_torch_load(path: Path, follow: bool = False):
    """torch.load of tensors and plain containers only (weights_only): nothing else is unpickled.
    Read through the guarded reader (`follow`: a link the user gave is followed)."""
    import torch

    data = files.read_regular(path, MAX_BYTES, "checkpoint", follow)
    with warnings.catch_warnings():  # torch warns about non-tensor files; reslab says it in one sentence
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_failure(e: Exception) -> str:
    """A short reason for a failed safe torch.load."""
    text = str(e)
    if any(k in text for k in ("Unsupported operand", "invalid load key", "magic number", "zip archive")):
        return "it is not a PyTorch checkpoint file at all"
    if "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        return f"it asks to run {found.group(1)}" if found else "it holds Python objects, not only tensors"
    return one_line(e)


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors))


def load_weights(path: Path, name: str | None = None, advice: str = "", follow: bool = False) -> dict:
    """The tensors of a .safetensors file; `name` (default: the path) and `advice` for the message
    when it cannot be read; `follow`: a link the user gave is followed."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = files.read_regular(path, MAX_BYTES, "weights file", follow)
    try:
        return load(data)
    except (SafetensorError, OSError) as e:
        raise UserError(
            f"{name or path} cannot be read as safetensors weights ({one_line(e)})" + (f"; {advice}" if advice else ".")
        ) from None
