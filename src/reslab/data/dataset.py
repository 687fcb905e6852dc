"""The dataset in memory, as every source returns it: uint8 images [N, C, H, W] and int64
labels per split, checked when made."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reslab.errors import UserError


def data_root() -> Path:
    """Where downloads and caches go: $RESLAB_DATA, else ~/.cache/reslab/data. A process with no
    home (a container's user with neither HOME nor an entry in the password database) uses a
    folder of its own under the system's temporary directory instead of failing at start."""
    if os.environ.get("RESLAB_DATA"):
        return Path(os.environ["RESLAB_DATA"])
    try:
        return Path.home() / ".cache" / "reslab" / "data"
    except RuntimeError:
        return Path(tempfile.gettempdir()) / f"reslab-{os.getuid()}" / "data"


DEFAULT_DATA_DIR = data_root()


@dataclass
class Dataset:
    """A dataset in memory: uint8 images [N, C, H, W] and int64 labels per split."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    # The paper's crop-and-flip suits natural images; digits must not be mirrored.
    augment: bool = True
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return c, h, w

    def to(self, device) -> Dataset:
        """The same dataset with every split on `device` (copied once, not per use)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        splits = ("train_x", "train_y", "test_x", "test_y", "val_x", "val_y")
        moved: dict[str, Any] = {k: move(getattr(self, k)) for k in splits}
        return dataclasses.replace(self, **moved)

    def normalization(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training split, in [0, 1] units."""
        x = self.train_x.double().div_(255)
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
        return mean.tolist(), std.tolist()


def check_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int, where: str) -> None:
    if images.ndim != 4 or images.dtype != np.uint8:
        raise UserError(f"{where}: expected uint8 images of shape [N, C, H, W], got {images.dtype} {images.shape}.")
    if len(images) != len(labels):
        raise UserError(f"{where}: {len(images)} images but {len(labels)} labels; the file is damaged.")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(
            f"{where}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}; "
            "the file is damaged or belongs to another dataset."
        )


def make_dataset(name, train_x, train_y, test_x, test_y, classes, augment=True, info=None) -> Dataset:
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        check_arrays(x, y, len(classes), f"{name} ({split} split)")
    return Dataset(
        name=name,
        train_x=torch.from_numpy(np.require(train_x, requirements=["C", "W"])),
        train_y=torch.from_numpy(np.asarray(train_y, dtype=np.int64)),
        test_x=torch.from_numpy(np.require(test_x, requirements=["C", "W"])),
        test_y=torch.from_numpy(np.asarray(test_y, dtype=np.int64)),
        classes=list(classes),
        augment=augment,
        info=info or {},
    )
