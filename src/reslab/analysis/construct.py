"""The constructed solution (paper, section 1): a deeper net that is a trained shallower net
plus layers that compute the identity, so its training error is exactly the shallow net's.

Extra plain layers: a Dirac conv kernel (1 at the centre tap of the same channel) and a BN made
a pass-through in eval mode (running mean 0, running variance 1 - eps, gamma 1, beta 0); the
ReLU after it is the identity on the non-negative output of the previous ReLU. Extra residual
blocks: the residual branch is zeroed (last BN gamma = beta = 0, or the last conv for
pre-activation units), so the block computes relu(0 + x) = x. Exact in eval mode only, since
train-mode BN normalises by batch statistics.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reslab.errors import UserError
from reslab.models import CifarNet, ModelConfig, blocks_per_stage, build_model


def identity_bn(bn: nn.BatchNorm2d) -> None:
    """Make an eval-mode BN return its input: (x - 0) / sqrt(1 - eps + eps) * 1 + 0."""
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.fill_(1 - bn.eps)
        bn.weight.fill_(1.0)
        bn.bias.zero_()


def make_identity_block(block: nn.Module, arch: str) -> None:
    with torch.no_grad():
        if arch == "plain":
            for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
                nn.init.dirac_(conv.weight)
                identity_bn(bn)
        elif arch == "resnet":
            block.bn2.weight.zero_()
            block.bn2.bias.zero_()
        else:  # pre-activation: nothing follows the last conv of the branch
            last = block.conv3 if hasattr(block, "conv3") else block.conv2
            last.weight.zero_()


def construct_deeper(shallow: CifarNet, depth: int, seed: int = 0) -> tuple[CifarNet, list[str]]:
    """A net of `depth` whose first blocks in each stage are `shallow`'s and whose extra blocks
    (appended at the end of each stage, where the shape no longer changes) are identities.
    Returns the net (eval mode) and the names of the identity blocks."""
    cfg: ModelConfig = shallow.config
    n_small, n_big = blocks_per_stage(cfg.arch, cfg.depth), blocks_per_stage(cfg.arch, depth)
    if n_big < n_small:
        raise UserError(f"--depth {depth} is shallower than the source network ({cfg.depth}); give a deeper one.")
    torch.manual_seed(seed)  # the extra blocks' other weights start as a fresh net's would
    deep = build_model(ModelConfig(**{**cfg.to_dict(), "depth": depth}))
    own = shallow.state_dict()
    target = deep.state_dict()
    for key, value in own.items():
        target[key] = value.clone()  # same names for the stem, the first n_small blocks and the head
    deep.load_state_dict(target)
    added = []
    for s, stage in enumerate((deep.layer1, deep.layer2, deep.layer3), start=1):
        for j in range(n_small, n_big):
            make_identity_block(stage[j], cfg.arch)
            added.append(f"layer{s}.{j}")
    return deep.eval(), added


SAME_OUTPUTS = 1e-4  # largest logit difference still called "the same" (fp32 sums in another order)


def outputs_text(result: dict) -> str:
    """What was measured about the constructed net's outputs, in words that follow the numbers."""
    diff = result["max_abs_difference"]
    if diff <= SAME_OUTPUTS:
        return f"computes the same outputs (largest logit difference {diff:.1e})"
    same = result.get("same_predictions")
    return f"computes different outputs (largest logit difference {diff:.1e}" + (
        ", the same predictions on every image)" if same else ", and changes some predictions)"
    )
