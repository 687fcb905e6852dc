"""Lesion study (Veit, Wilber and Belongie 2016): delete residual blocks at test time.

Deleting a residual block keeps its shortcut: a post-activation block becomes relu(shortcut(x))
(x itself when the shortcut is the identity), a pre-activation one shortcut(x). A plain net has no
shortcut to keep: a deleted block passes its input on unchanged, which is possible only where the
block does not change the shape; the blocks that downsample cannot be removed at all.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from reslab.analysis.common import error_rate
from reslab.models import CifarNet


class Deleted(nn.Module):
    """What is left of a block once its residual branch (or, in a plain net, the block) is gone."""

    def __init__(self, block: nn.Module, post_activation: bool):
        super().__init__()
        self.shortcut = block.shortcut if block.shortcut is not None else nn.Identity()
        self.post_activation = post_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shortcut(x)
        return F.relu(out) if self.post_activation else out


def removable(block: nn.Module) -> bool:
    """A plain block can be skipped only when input and output shapes agree."""
    if getattr(block, "shortcut", None) is not None:
        return True
    return block.conv1.stride == (1, 1) and block.conv1.in_channels == block.conv2.out_channels


def delete_blocks(model: CifarNet, indices: set[int]) -> CifarNet:
    """A copy of `model` with the blocks at `indices` (0-based, across stages) deleted."""
    lesioned = copy.deepcopy(model)
    position = 0
    for stage in (lesioned.layer1, lesioned.layer2, lesioned.layer3):
        for j in range(len(stage)):
            if position in indices:
                stage[j] = Deleted(stage[j], post_activation=not lesioned.preact)
            position += 1
    return lesioned.eval()


def single_deletions(model: CifarNet, x: torch.Tensor, y: torch.Tensor, progress=None) -> list[dict]:
    """Error after deleting each block alone (None where a plain block cannot be removed)."""
    out = []
    for i, block in enumerate(model.blocks()):
        downsampling = block.conv1.stride != (1, 1) or block.conv1.in_channels != _out_channels(block)
        error = error_rate(delete_blocks(model, {i}), x, y) if removable(block) else None
        out.append({"block": i + 1, "downsampling": downsampling, "error": error})
        if progress:
            progress()
    return out


def _out_channels(block: nn.Module) -> int:
    return (block.conv3 if hasattr(block, "conv3") else block.conv2).out_channels


def random_deletions(
    model: CifarNet, x: torch.Tensor, y: torch.Tensor, ks: list[int], samples: int = 10, seed: int = 0, progress=None
) -> list[dict]:
    """Mean and std of the error after deleting k random removable blocks, for each k."""
    g = torch.Generator().manual_seed(seed)
    candidates = [i for i, b in enumerate(model.blocks()) if removable(b)]
    out = []
    for k in ks:
        if k > len(candidates):
            break
        errors = []
        for _ in range(samples):
            pick = torch.randperm(len(candidates), generator=g)[:k].tolist()
            errors.append(error_rate(delete_blocks(model, {candidates[p] for p in pick}), x, y))
            if progress:
                progress()
        mean = sum(errors) / len(errors)
        std = (sum((e - mean) ** 2 for e in errors) / max(1, len(errors) - 1)) ** 0.5
        out.append({"k": k, "error_mean": mean, "error_std": std, "samples": len(errors)})
    return out
