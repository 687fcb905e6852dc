"""What a run trains on: images resized, validation held out, training and test subsets drawn
class-balanced, each size checked first."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from reslab.data.dataset import Dataset
from reslab.errors import UserError


def resize(ds: Dataset, size: int | None) -> Dataset:
    """Every split's images at size x size: area averaging when shrinking (each new pixel the mean
    of the old pixels it covers, as in the downsampled ImageNet and CIFAR variants of Chrabaszcz
    et al. 2017), bilinear when enlarging. None, or the size the images have, changes nothing."""
    if size is None or ds.image_shape[1:] == (size, size):
        return ds

    def one(x: torch.Tensor) -> torch.Tensor:
        mode = "area" if size <= min(x.shape[2:]) else "bilinear"
        chunks = [
            F.interpolate(c.float(), size=(size, size), mode=mode).round_().clamp_(0, 255).to(torch.uint8)
            for c in x.split(4096)
        ]
        return torch.cat(chunks) if chunks else x[:, :, :size, :size]

    return dataclasses.replace(
        ds,
        train_x=one(ds.train_x),
        test_x=one(ds.test_x),
        val_x=None if ds.val_x is None else one(ds.val_x),
        info={**ds.info, "resized_from": list(ds.image_shape[1:])},
    )


def balanced_indices(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n indices with the classes as equally represented as the data allows, in random order."""
    classes = labels.unique()
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=generator)] for idx in per_class]
    chosen: list[torch.Tensor] = []
    k = 0
    # Round-robin over classes so that any n is as balanced as possible.
    while len(chosen) < n:
        for idx in per_class:
            if k < len(idx) and len(chosen) < n:
                chosen.append(idx[k])
        k += 1
    out = torch.stack(chosen)
    return out[torch.randperm(len(out), generator=generator)]


def prepare(
    ds: Dataset, subset: int | None = None, val_split: int = 0, seed: int = 0, test_subset: int | None = None
) -> Dataset:
    """Hold out `val_split` training images for validation (class-balanced), then subsample the
    training images to `subset`, and the test images to `test_subset` (None: in the proportion of
    the training subset, so a small run does not spend its time scoring the whole test set; 0: all)."""
    check_sizes(ds, subset, val_split, test_subset)
    n = len(ds.train_y)
    g = torch.Generator().manual_seed(seed)
    if val_split:
        val = balanced_indices(ds.train_y, val_split, g)
        keep = torch.ones(n, dtype=torch.bool)
        keep[val] = False
        ds.val_x, ds.val_y = ds.train_x[val], ds.train_y[val]
        ds.train_x, ds.train_y = ds.train_x[keep], ds.train_y[keep]
    if subset:
        n = len(ds.train_y)
        idx = balanced_indices(ds.train_y, subset, g).sort().values
        ds.train_x, ds.train_y = ds.train_x[idx], ds.train_y[idx]
    n_test = len(ds.test_y)
    if test_subset is None:
        test_subset = max(ds.num_classes, round(n_test * subset / n)) if subset else 0
    if 0 < test_subset < n_test:
        # Its own generator: the training images drawn are the same whatever the test subset.
        idx = balanced_indices(ds.test_y, test_subset, torch.Generator().manual_seed(seed + 3)).sort().values
        ds.test_x, ds.test_y = ds.test_x[idx], ds.test_y[idx]
    return ds


def check_sizes(ds: Dataset, subset: int | None, val_split: int, test_subset: int | None) -> None:
    """The split sizes asked for fit the dataset: checked before a grid trains any cell."""
    n, n_test = len(ds.train_y), len(ds.test_y)
    if val_split and not 0 < val_split < n:
        raise UserError(f"--val-split {val_split} must be between 1 and {n - 1} for {ds.name}.")
    if subset and not 0 < subset <= n - val_split:
        raise UserError(f"--subset {subset} must be between 1 and {n - val_split} for {ds.name}.")
    if test_subset is not None and test_subset > n_test:
        raise UserError(f"--test-subset {test_subset} must be at most {n_test}, the test images of {ds.name}.")
