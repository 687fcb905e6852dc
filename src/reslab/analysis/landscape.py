"""Loss landscape (Li et al. 2018): the loss along filter-normalised random directions.

A direction d has the shape of the weights and Gaussian entries; each filter of d (each output
unit of a conv or linear weight) is rescaled to the norm of the same filter of the weights, and
BN parameters and biases get a zero direction. The loss L(w + a d1 + b d2) is measured on a fixed
set of training images with BN in eval mode (the trained running statistics).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def filter_normalized_direction(model: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    direction = {}
    for name, w in model.named_parameters():
        if w.dim() <= 1:
            direction[name] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator)
        w_norm = w.detach().flatten(1).norm(dim=1)
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        direction[name] = d * (w_norm / d_norm).view(-1, *([1] * (w.dim() - 1)))
    return direction


@torch.inference_mode()
def loss_at(model, x, y, batch_size=1000, precision="fp32") -> tuple[float, float]:
    """Mean cross-entropy and error of `model` (eval mode) on (x, y)."""
    model.eval()
    loss = wrong = 0.0
    for i in range(0, len(y), batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x[i : i + batch_size]).float()
        loss += F.cross_entropy(out, y[i : i + batch_size], reduction="sum").item()
        wrong += (out.argmax(1) != y[i : i + batch_size]).sum().item()
    return loss / len(y), wrong / len(y)


@torch.inference_mode()
def surface(
    model, x, y, directions: list[dict], coords: list[list[float]], precision: str = "fp32", progress=None
) -> list[list[float]]:
    """Loss at w + sum_i c_i d_i for each coordinate tuple c in `coords`; weights restored after."""
    params = dict(model.named_parameters())
    origin = {k: p.detach().clone() for k, p in params.items()}
    losses = []
    try:
        for c in coords:
            for k, p in params.items():
                p.copy_(origin[k] + sum(ci * d[k] for ci, d in zip(c, directions)))
            losses.append(loss_at(model, x, y, precision=precision))
            if progress:
                progress()
    finally:
        for k, p in params.items():
            p.copy_(origin[k])
    return losses
