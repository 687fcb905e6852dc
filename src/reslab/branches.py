"""How near the identity a network's blocks are: for each residual block, the size of its branch
F(x) against its shortcut's output, ‖F(x)‖ / ‖shortcut(x)‖ on a fixed batch (0: the block is
exactly the identity on its input's positive part); for each plain block, the gain
‖block(x)‖ / ‖x‖; and how much of the input's variation reaches the classifier (0: none).

Measured at initialisation (train-mode BN, as the first step sees it: the running statistics
are not yet estimates) and after training (eval mode, as the network is used)."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def measure(model: torch.nn.Module, x: torch.Tensor, train_mode: bool) -> dict:
    """Per block (in order): its branch-to-shortcut ratio (residual) or gain (plain); and the
    signal that reaches the classifier, as the std over images of the pooled features relative
    to that of the stem's output. `x` is the normalised float batch."""
    blocks = list(model.blocks())  # type: ignore[operator]
    seen: dict[int, dict] = {}
    hooks = []
    for i, block in enumerate(blocks):
        hooks.append(
            block.register_forward_hook(lambda m, inp, out, i=i: seen.setdefault(i, {}).update(x=inp[0], y=out))
        )
        hooks.append(block.last_bn.register_forward_hook(lambda m, inp, out, i=i: seen.setdefault(i, {}).update(f=out)))
    stem: dict = {}
    hooks.append(model.bn1.register_forward_hook(lambda m, inp, out: stem.update(out=out)))  # type: ignore[union-attr]
    was = model.training
    model.train(train_mode)
    try:
        model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    rows = []
    for i, block in enumerate(blocks):
        s = seen[i]
        shortcut = getattr(block, "shortcut", None)
        if shortcut is not None:
            ratio = ratio_of(s["f"], shortcut(s["x"]))
            reshapes = s["x"].shape != s["y"].shape  # a downsampling block: its shortcut subsamples (and pads)
            rows.append({"block": i + 1, "kind": "residual", "ratio": ratio, "downsampling": reshapes})
        else:
            rows.append({"block": i + 1, "kind": "plain", "gain": ratio_of(s["y"], s["x"])})
    features = seen[len(blocks) - 1]["y"].mean(dim=(2, 3))
    start = torch.relu(stem["out"]).mean(dim=(2, 3))
    signal = ratio_of(features.std(dim=0), start.std(dim=0))
    return {"blocks": rows, "signal": signal}


def ratio_of(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """‖a‖ / ‖b‖ over the batch; None where b is 0 (nothing to compare with)."""
    nb = float(b.float().norm())
    return None if nb == 0 or not math.isfinite(nb) else float(a.float().norm()) / nb


def mean_ratio(m: dict) -> float | None:
    """The mean branch-to-shortcut ratio over a net's residual blocks (None for a plain net)."""
    values = [b["ratio"] for b in m["blocks"] if b.get("ratio") is not None]
    return sum(values) / len(values) if values else None
