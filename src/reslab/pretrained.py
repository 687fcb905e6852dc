"""Importing the widely used PyTorch CIFAR ResNet checkpoints as run directories.

Those files hold {'state_dict': ..., 'best_prec1': ...} with `module.` prefixes (saved from
DataParallel), option-A shortcuts that pad planes//4 zero channels on each side (what
reslab's PadShortcut does), and were trained on inputs normalised with the ImageNet mean and
std, which the imported run records so that `reslab eval` scores it as it was trained.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import torch

from reslab import accel, checkpoints, files, runs
from reslab.config import TrainConfig
from reslab.errors import UserError
from reslab.models import ModelConfig, build_model, describe, state_mismatch

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# The pretrained CIFAR-10 ResNets of akamaster/pytorch_resnet_cifar10 (BSD 2-clause licence),
# the files most public reproductions compare against, by name: file and sha256.
SOURCE = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
NAMED = {
    "resnet20": ("resnet20-12fca82f.th", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"),
    "resnet32": ("resnet32-d509ac18.th", "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850"),
    "resnet44": ("resnet44-014dd654.th", "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4"),
    "resnet56": ("resnet56-4bfd9763.th", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367"),
}


def fetch_named(name: str, cache: Path | None = None) -> Path:
    """The checkpoint called `name` (resnet20 ... resnet56): from the cache when it is there with
    the right sha256, else downloaded and checked; offline, a sentence says where to put it."""
    from reslab.data import DEFAULT_DATA_DIR, download, md5_of

    file, sha256 = NAMED[name]
    dest = (cache or DEFAULT_DATA_DIR / "pretrained") / file
    if dest.is_file() and md5_of(dest, "sha256") == sha256:
        return dest
    logging.getLogger(__name__).info(f"downloading {SOURCE}{file} to {dest} ...")
    return download(SOURCE + file, dest, sha256, "sha256", packed=False)


def read_state_dict(path: Path) -> tuple[dict, dict]:
    """(state dict without DataParallel prefixes, other entries of the file); loads safely."""
    try:
        obj = checkpoints.safe_torch_load(path, follow=True)
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"{path} cannot be loaded safely as a PyTorch checkpoint ({checkpoints.load_failure(e)}); only tensors "
            "and plain "
            "containers are accepted."
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state, extra = obj["state_dict"], {k: v for k, v in obj.items() if k != "state_dict"}
    elif isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
        state, extra = obj, {}
    else:
        raise UserError(f"{path} holds neither a state dict nor {{'state_dict': ...}}.")
    odd = [str(k) for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if odd:
        raise UserError(f"{path}: its state dict holds values that are not tensors ({', '.join(odd[:3])}).")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return state, extra


def infer_config(state: dict, path: Path) -> ModelConfig:
    """The reslab model a state dict in the common CIFAR ResNet layout describes."""
    try:
        stem, classifier = state["conv1.weight"], state["linear.weight"]
    except KeyError as e:
        raise UserError(f"{path} is not a CIFAR ResNet in the common layout (no {e} tensor).") from None
    if stem.dim() != 4 or classifier.dim() != 2:
        raise UserError(f"{path}: conv1.weight and linear.weight have the wrong number of dimensions.")
    stages = [{int(m.group(1)) for k in state if (m := re.match(rf"layer{s}\.(\d+)\.", k))} for s in (1, 2, 3)]
    if not stages[0]:
        raise UserError(f"{path} has no layer1 blocks; it is not a CIFAR ResNet in the common layout.")
    n = max(stages[0]) + 1
    # Every stage must hold blocks 0..n-1 before a network of that depth is built: a small crafted
    # file naming block 3000 must not cost minutes and gigabytes.
    if any(blocks != set(range(n)) for blocks in stages):
        raise UserError(
            f"{path} does not hold n blocks numbered 0..n-1 in each of layer1, layer2 and layer3 "
            f"(found {', '.join(str(len(b)) for b in stages)} blocks, numbered up to {n - 1}); it is not a CIFAR "
            "ResNet in the common layout."
        )
    return ModelConfig("resnet", 6 * n + 2, "A", stem.shape[0], classifier.shape[0], stem.shape[1])


def check_normalization(mean: list[float], std: list[float], channels: int) -> tuple[list[float], list[float]]:
    """The input normalisation given at import: one finite mean and one positive finite std per
    channel, refused here rather than by every later command."""
    if len(mean) != channels or len(std) != channels:
        raise UserError(f"--mean and --std need {channels} values each.")
    if not all(math.isfinite(v) for v in [*mean, *std]) or not all(v > 0 for v in std):
        raise UserError(f"--mean must be finite numbers and --std positive finite numbers, got {mean} and {std}.")
    return list(mean), list(std)


def check_dataset(name: str) -> None:
    """The dataset named at import must be one reslab knows (its data is not loaded here)."""
    from reslab.data import DATASETS, SOURCES

    if name not in SOURCES and not (name.startswith("imagefolder:") and len(name) > len("imagefolder:")):
        raise UserError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}.")


MAX_EXTRA_TEXT = 200


def kept_entries(extra: dict, path: Path) -> dict:
    """The file's other entries that are plain facts (a short text, a finite number) under a
    short name, such as best_prec1; the rest are left out, with a note."""
    kept, left = {}, []
    for k, v in extra.items():
        v = v.item() if torch.is_tensor(v) and v.numel() == 1 else v
        fact = isinstance(v, str) and len(v) <= MAX_EXTRA_TEXT
        fact = fact or (type(v) in (int, float) and math.isfinite(v) and abs(v) < 1e15)
        if isinstance(k, str) and 0 < len(k) <= 64 and fact:
            kept[k] = v
        else:
            left.append(str(k)[:40])
    if left:
        logging.getLogger(__name__).warning(
            f"note: {path.name}: entries left out of the import (not a short text or a finite number): "
            + ", ".join(left[:5])
        )
    return kept


def import_checkpoint(path: Path, out: Path, mean=None, std=None, dataset: str = "cifar10") -> runs.RunConfig:
    """Write a run directory for the checkpoint at `path`; returns its config.json."""
    path, out = Path(path), Path(out)
    if runs.is_run_dir(out):
        raise UserError(f"{out} already holds a run; choose another --out or delete it.")
    runs.claim_dir(out, "run")
    state, extra = read_state_dict(path)
    cfg = infer_config(state, path)
    model = build_model(cfg)
    detail = state_mismatch(model, state)
    if detail:
        raise UserError(
            f"{path} does not match reslab's ResNet-{cfg.depth} with option-A shortcuts: {detail}. "
            "Only the common CIFAR ResNet layout (conv1, bn1, layer1..3, linear) can be imported."
        )
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    mean, std = check_normalization(mean or IMAGENET_MEAN, std or IMAGENET_STD, cfg.in_channels)
    check_dataset(dataset)
    digest = files.digest(path, follow=True)
    config = runs.RunConfig(
        train=TrainConfig(arch="resnet", depth=cfg.depth, shortcut="A", width=cfg.width, dataset=dataset),
        model=cfg,
        resolved=runs.Resolved(
            normalization={"mean": list(mean), "std": list(std)},
            **describe(model, (cfg.in_channels, 32, 32)),
            precision="fp32",
            augment=True,
        ),
        data=runs.DataInfo(
            name=dataset,
            classes=CIFAR10_CLASSES if cfg.num_classes == 10 else [str(i) for i in range(cfg.num_classes)],
            image_shape=[cfg.in_channels, 32, 32],
        ),
        # reslab's own provenance; what the file says of itself is data, under its own key.
        imported={"file": str(path.resolve()), "sha256": digest, "extra": kept_entries(extra, path)},
        environment=accel.environment(torch.device("cpu")),
    )
    with runs.run_lock(out):  # a training run started on the same --out meanwhile is not mixed in
        if runs.is_run_dir(out):
            raise UserError(f"{out} already holds a run; choose another --out or delete it.")
        runs.write_run(out, config, model, ("finished", f"imported from {path.name} (sha256 {digest[:12]})"))
    return config
