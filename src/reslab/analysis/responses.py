"""Layer responses (paper, Fig. 7): the standard deviation of each 3x3 layer's output.

For post-activation nets (plain, resnet) the response of a 3x3 conv is the output of the BN that
follows it, before the ReLU or the addition. Pre-activation units put nothing after their last
conv, so there the response is the 3x3 conv's output itself. The paper does not say how the std
is taken; the default pools over images, channels and positions ("pooled"), and the mean over
channels of each channel's std ("per_channel") is reported beside it, with the BN scale |gamma|,
which in eval mode is close to each channel's std.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reslab.models import BasicBlock, CifarNet


def response_modules(model: CifarNet) -> list[tuple[str, nn.Module, nn.BatchNorm2d | None]]:
    """(name, module whose output is the response, BN whose |gamma| goes with it), in order."""
    if model.preact:
        return [
            (name, m, None) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
        ]
    out = [("conv1", model.bn1, model.bn1)]
    for i, block in enumerate(model.blocks()):
        assert isinstance(block, BasicBlock)
        out += [(f"block{i + 1}.conv1", block.bn1, block.bn1), (f"block{i + 1}.conv2", block.bn2, block.bn2)]
    return out


@torch.inference_mode()
def layer_responses(model: CifarNet, x: torch.Tensor, batch_size: int = 500) -> list[dict]:
    """Per 3x3 layer: pooled std, mean per-channel std and mean |gamma|, over the images x."""
    model.eval()
    targets = response_modules(model)
    sums: dict[int, list[torch.Tensor]] = {}
    count: dict[int, int] = {}

    def hook(i):
        def fn(_m, _inp, out):
            o = out.double().transpose(0, 1).flatten(1)  # [channels, images * positions]
            s = [o.sum(1), (o * o).sum(1)]
            sums[i] = s if i not in sums else [a + b for a, b in zip(sums[i], s)]
            count[i] = count.get(i, 0) + o.shape[1]

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, (_, m, _) in enumerate(targets)]
    try:
        for j in range(0, len(x), batch_size):
            model(x[j : j + batch_size])
    finally:
        for h in handles:
            h.remove()
    layers = []
    for i, (name, _, bn) in enumerate(targets):
        s1, s2 = sums[i]
        n = count[i]
        mean_c = s1 / n
        var_c = (s2 / n - mean_c**2).clamp_min(0)
        pooled_mean = s1.sum() / (n * len(s1))
        pooled_var = (s2.sum() / (n * len(s1)) - pooled_mean**2).clamp_min(0)
        layers.append(
            {
                "layer": name,
                "std": pooled_var.sqrt().item(),
                "std_per_channel": var_c.sqrt().mean().item(),
                "gamma": bn.weight.detach().abs().mean().item() if bn is not None else None,
            }
        )
    return layers


RELATIVE_MARGIN = 0.05  # differences under 5% of the larger value are called unclear


def compare(a: float, b: float) -> bool | None:
    """True if a is clearly smaller than b, False if clearly larger, None if within the margin."""
    if abs(a - b) <= RELATIVE_MARGIN * max(abs(a), abs(b)):
        return None
    return a < b


def overall(outcomes: list[bool | None]) -> bool | None:
    if any(o is False for o in outcomes):
        return False
    return True if outcomes and all(outcomes) else None


def findings(results: list[dict], key: str = "std") -> list[dict]:
    """The paper's two observations, checked: (1) residual responses are smaller than plain ones
    at equal depth; (2) deeper residual nets have smaller responses. Means over layers; a
    difference within 5% counts as unclear."""
    mean = {(r["arch"], r["depth"]): sum(layer[key] for layer in r["layers"]) / len(r["layers"]) for r in results}
    what = key.replace("_", " ")
    out = []
    pairs = sorted(d for a, d in mean if a == "plain" and ("resnet", d) in mean)
    if pairs:
        text = "; ".join(
            f"depth {d}: ResNet {mean[('resnet', d)]:.3f} vs plain {mean[('plain', d)]:.3f}" for d in pairs
        )
        holds = overall([compare(mean[("resnet", d)], mean[("plain", d)]) for d in pairs])
        out.append(
            {
                "claim": "Residual responses are smaller than plain ones",
                "holds": holds,
                "text": f"Mean {what} over layers, {text}" + ("" if holds else " (within 5% counts as unclear)") + ".",
            }
        )
    res = sorted(d for a, d in mean if a == "resnet")
    if len(res) > 1:
        values = [mean[("resnet", d)] for d in res]
        holds = overall([compare(b, a) for a, b in zip(values, values[1:])])
        text = ", ".join(f"ResNet-{d} {v:.3f}" for d, v in zip(res, values))
        verdict = {
            True: "decreasing with depth",
            False: "not decreasing with depth",
            None: "no clear trend (differences within 5%)",
        }[holds]
        out.append(
            {
                "claim": "Deeper residual nets have smaller responses",
                "holds": holds,
                "text": f"Mean {what} over layers: {text} — {verdict}.",
            }
        )
    return out
