"""Scoring networks: input normalisation, the one evaluation loop (training's test and
validation errors, `reslab eval`, the analyses), and loading a run's network to score."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from reslab import accel, checkpoints, runs
from reslab.errors import UserError, plural
from reslab.models import CifarNet, build_model, check_size, state_mismatch


def normalization(config: runs.RunConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and std a run's inputs were normalised with, shaped [1, C, 1, 1]."""
    mean, std = config.normalization()
    shape = (1, -1, 1, 1)
    return (
        torch.tensor(mean, dtype=torch.float32, device=device).view(shape),
        torch.tensor(std, dtype=torch.float32, device=device).view(shape),
    )


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images to the network's float input."""
    return (x.float().div(255) - mean) / std


def batches(model, x, mean=None, std=None, precision="fp32", batch_size=1000, channels_last=False):
    """(start, fp32 logits) per batch of x, in eval mode; uint8 images are normalised with mean
    and std on the way, float images are taken as they are."""
    device = next(model.parameters()).device
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device, non_blocking=True)
        if mean is not None:
            xb = normalize(xb, mean, std)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with accel.autocast(device, precision):
            yield i, model(xb).float()


@torch.inference_mode()
def score(model, x, y, mean, std, precision="fp32", batch_size=1000, channels_last=True, group=None):
    """Mean cross-entropy and error fraction of `model` (eval mode) on uint8 images x; with a
    distributed group, each rank scores its share of the images and the sums are reduced."""
    n = len(y)
    if group is not None and group.active:
        part = group.shard(n)
        x, y = x[part], y[part]
    was_training = model.training
    model.eval()
    device = y.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    wrong = torch.zeros((), device=device, dtype=torch.int64)
    for i, out in batches(model, x, mean, std, precision, batch_size, channels_last):
        yb = y[i : i + batch_size].to(out.device, non_blocking=True)
        loss_sum += F.cross_entropy(out, yb, reduction="sum")
        wrong += (out.argmax(1) != yb).sum()
    model.train(was_training)
    if group is not None and group.active:
        total = group.all_sum(torch.stack([loss_sum, wrong.double()]))
        loss_sum, wrong = total[0], total[1]
    n = max(1, n)
    return loss_sum.item() / n, wrong.item() / n


@torch.inference_mode()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """fp32 logits of already normalised images, eval mode."""
    model.eval()
    return torch.cat([out for _, out in batches(model, x, batch_size=batch_size)])


def error_rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (predict(model, x).argmax(1) != y).float().mean().item()


def load_run_model(run_dir: Path) -> tuple[CifarNet, runs.RunConfig]:
    """The network of a run directory with its final weights (or its last checkpoint's)."""
    run_dir = Path(run_dir)
    if not runs.is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a run directory (it has no config.json).")
    config = runs.read_config(run_dir)
    try:
        check_size(config.model)
    except UserError as e:
        raise UserError(f"{run_dir / 'config.json'} describes a network reslab does not build: {e}") from None
    model = build_model(config.model)
    status = runs.read_status(run_dir)
    if status["state"] != "finished":
        at = f" at iteration {status['iteration']} of {status['total']}" if "total" in status else ""
        logging.getLogger(__name__).warning(
            f"note: {run_dir} is not a finished run (it is {status['state']}{at}); the weights of its last "
            "checkpoint are used."
        )
    weights = run_dir / "model.safetensors"
    state: Any
    if weights.exists():
        state = checkpoints.load_weights(weights, advice="it is damaged; re-run or re-import the run.")
    elif (run_dir / "checkpoint.pt").exists():
        saved = checkpoints.load_checkpoint(run_dir / "checkpoint.pt")
        state = saved.get("model") if isinstance(saved, dict) else None
    else:
        raise UserError(f"{run_dir} has no weights yet (no model.safetensors or checkpoint.pt).")
    if not isinstance(state, dict):
        raise UserError(f"the checkpoint of {run_dir} holds no model weights; it is damaged.")
    detail = state_mismatch(model, state)
    if detail:
        raise UserError(f"the weights in {run_dir} do not fit its configured model ({detail}).")
    model.load_state_dict(state, strict=False)
    model.eval()
    return model, config


def evaluate_run(
    run_dir: Path,
    dataset: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    device: str = "auto",
    precision: str = "run",
) -> dict:
    """Test loss and error of a run's weights, normalised as the run was trained. On the run's own
    dataset it scores the test images the run scored, in the precision it scored them in
    (precision "run"), so the error is its last metrics row's; "fp32" or "bf16" choose."""
    from reslab.data import load_dataset, prepare, resize

    model, config = load_run_model(run_dir)
    name = dataset or config.dataset
    t = config.train
    data = resize(load_dataset(name, data_dir or t.data_dir, download), t.image_size)
    m = config.model
    if data.image_shape[0] != m.in_channels or data.num_classes > m.num_classes:
        raise UserError(
            f"{name} ({plural(data.image_shape[0], 'channel')}, {plural(data.num_classes, 'class')}) does not "
            f"fit the network of {run_dir} ({plural(m.in_channels, 'channel')}, {plural(m.num_classes, 'class')})."
        )
    own = name == config.dataset and config.imported is None
    if own:  # the same held-out and test images as the run (imported nets: the whole test set)
        data = prepare(data, t.subset, t.val_split, t.seed, t.test_subset)
    as_run = precision == "run"
    chosen = (config.resolved.precision or "fp32") if as_run else precision
    dev = accel.resolve_device(device)
    mean, std = normalization(config, dev)
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    model.to(dev, memory_format=fmt)  # type: ignore[call-overload]
    loss, error = score(
        model, data.test_x.to(dev), data.test_y.to(dev), mean, std, chosen, channels_last=t.channels_last
    )
    return {
        "dataset": name,
        "images": len(data.test_y),
        "loss": loss,
        "error": error,
        "precision": chosen,
        "as_run": as_run and own,
    }
