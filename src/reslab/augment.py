"""The paper's augmentation, batched on the training device: pad, random crop, random flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """Zero-pad every image by `pad` pixels, crop a random window of the original size, and
    mirror it horizontally with probability 1/2; each image draws its own offsets.

    One gather does crop and flip together (flipped images read their columns backwards), so
    the cost is one indexed copy of the batch, whatever the batch size.
    """
    b, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    rows = oy[:, None] + torch.arange(h, device=dev)
    cols = torch.arange(w, device=dev).expand(b, w)
    if flip:
        mirror = torch.rand(b, generator=generator, device=dev) < 0.5
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    cols = ox[:, None] + cols
    batch = torch.arange(b, device=dev)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2)


def default_pad(size: int) -> int:
    """4 pixels for 32x32 images as in the paper, scaled with the image size elsewhere."""
    return max(1, round(size / 8))
