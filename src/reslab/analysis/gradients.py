"""Gradient flow: per-layer gradient norms, and shattered gradients (Balduzzi et al. 2017).

Per-layer norms: ||dL/dW|| of every conv weight for one batch of training images, BN in train
mode (batch statistics, as during training; running statistics left untouched), at
initialisation (a fresh net built with the run's seed) and with the trained weights.

Shattered gradients: the gradient of the top logit with respect to the input, at `points` inputs
evenly spaced on a short line through an image, BN in eval mode; the mean correlation between
the gradients at neighbouring points. Nets at initialisation get their BN running statistics
from a few batches of real images first, so that eval mode is meaningful.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from reslab.models import CifarNet


def conv_gradient_norms(model: CifarNet, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """||dL/dW|| of each conv weight (in forward order), cross-entropy on (x, y), train-mode BN."""
    net = copy.deepcopy(model).train()  # a copy, so running statistics stay as they were
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    return [m.weight.grad.norm().item() for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


@torch.no_grad()
def calibrate_bn(model: CifarNet, x: torch.Tensor, batch_size: int = 256) -> CifarNet:
    """Set BN running statistics to the exact averages over x (momentum None = cumulative)."""
    net = copy.deepcopy(model)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    for i in range(0, len(x), batch_size):
        net(x[i : i + batch_size])
    return net.eval()


def gradient_correlation(
    model: CifarNet, image: torch.Tensor, points: int = 128, radius: float = 0.5, seed: int = 0
) -> float:
    """Mean Pearson correlation of input gradients at neighbouring points of a line segment of
    length 2 * radius (in normalised pixel units, along a random unit-RMS direction)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(image.shape, generator=g)
    direction /= direction.pow(2).mean().sqrt()
    t = torch.linspace(-radius, radius, points).view(-1, 1, 1, 1)
    xs = (image.unsqueeze(0) + t * direction.unsqueeze(0)).requires_grad_(True)
    model.eval()
    logits = model(xs)
    top = logits[points // 2].argmax()
    (grad,) = torch.autograd.grad(logits[:, top].sum(), xs)
    g = grad.flatten(1)
    g = g - g.mean(1, keepdim=True)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (g[:-1] * g[1:]).sum(1).mean().item()


def correlation_spread(model: CifarNet, images: torch.Tensor, points: int = 128, progress=None) -> dict:
    """gradient_correlation on one line through each of `images`, each along its own random
    direction: the mean, the standard deviation over lines, and every value (one line is noisy)."""
    values = []
    for i, image in enumerate(images):
        values.append(gradient_correlation(model, image, points, seed=i))
        if progress:
            progress()
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return {"correlation": mean, "correlation_std": std, "values": values}
