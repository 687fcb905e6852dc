"""Loading a run's network and scoring it: what `reslab eval` and the analyses build on."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from reslab import runs
from reslab.errors import UserError, plural
from reslab.models import ModelConfig, build_model, check_size, state_mismatch


def model_config(config: dict, run_dir: Path) -> ModelConfig:
    """The ModelConfig in a config.json, with every field of the right type (the file may come
    from someone else: nothing in it is trusted)."""
    try:
        cfg = ModelConfig(**config["model"])
    except (KeyError, TypeError) as e:
        raise UserError(f"{run_dir / 'config.json'} does not describe a model ({e}).") from None
    types = {"arch": str, "depth": int, "shortcut": str, "width": int, "num_classes": int, "in_channels": int}
    bad = [k for k, t in types.items() if type(getattr(cfg, k)) is not t]
    if bad:
        raise UserError(f"{run_dir / 'config.json'} has invalid model fields: {', '.join(bad)}.")
    try:
        check_size(cfg)
    except UserError as e:
        raise UserError(f"{run_dir / 'config.json'} describes a network reslab does not build: {e}") from None
    return cfg


def normalization(config: dict, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and std a run's inputs were normalised with, shaped [1, C, 1, 1]."""
    norm = config["resolved"].get("normalization")
    try:
        mean = torch.tensor(norm["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(norm["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    except (TypeError, KeyError, ValueError, RuntimeError):
        raise UserError("the run's config.json has no valid resolved.normalization (mean and std lists).") from None
    channels = config["model"].get("in_channels")
    if mean.numel() != channels or std.numel() != channels or not bool((std > 0).all()):
        raise UserError(f"the run's normalization does not fit its {channels}-channel input.")
    return mean, std


def load_run_model(run_dir: Path) -> tuple[torch.nn.Module, dict]:
    """The network of a run directory with its final weights (or its last checkpoint's)."""
    run_dir = Path(run_dir)
    if not runs.is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a run directory (it has no config.json).")
    config = runs.read_config(run_dir)
    model = build_model(model_config(config, run_dir))
    status = runs.read_status(run_dir)
    if status["state"] != "finished":
        at = f" at iteration {status['iteration']} of {status['total']}" if "total" in status else ""
        print(
            f"reslab: note: {run_dir} is not a finished run (it is {status['state']}{at}); the weights of its "
            "last checkpoint are used.",
            file=sys.stderr,
        )
    weights = run_dir / "model.safetensors"
    if weights.exists():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(weights)
        except (SafetensorError, OSError) as e:
            raise UserError(f"{weights} is damaged ({e}); re-run or re-import the run.") from None
    elif (run_dir / "checkpoint.pt").exists():
        from reslab.train import load_checkpoint

        state = load_checkpoint(run_dir / "checkpoint.pt")
        state = state.get("model") if isinstance(state, dict) else None
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
    run_dir: Path, dataset: str | None = None, data_dir: str | None = None, download: bool = True, device: str = "auto"
) -> dict:
    """Test loss and error of a run's weights, normalised as the run was trained."""
    from reslab.data import load_dataset
    from reslab.train import evaluate, resolve_device

    model, config = load_run_model(run_dir)
    name = dataset or config["data"]["name"]
    data = load_dataset(name, data_dir or config["train"].get("data_dir"), download)
    if (
        list(data.image_shape[:1]) != [config["model"]["in_channels"]]
        or data.num_classes > config["model"]["num_classes"]
    ):
        raise UserError(
            f"{name} ({plural(data.image_shape[0], 'channel')}, {plural(data.num_classes, 'class')}) does not "
            f"fit the network of {run_dir} ({plural(config['model']['in_channels'], 'channel')}, "
            f"{plural(config['model']['num_classes'], 'class')})."
        )
    dev = resolve_device(device)
    mean, std = normalization(config, dev)
    model.to(dev, memory_format=torch.channels_last)
    loss, error = evaluate(model, data.test_x.to(dev), data.test_y.to(dev), mean, std, dev, "fp32")
    return {"dataset": name, "images": len(data.test_y), "loss": loss, "error": error}
