"""The paper's CIFAR networks: plain and residual, post- and pre-activation, and counting.

He et al. 2016, section 4.2: a 3x3 conv stem with 16 filters, three stages of n blocks of two
3x3 convs at 16/32/64 filters on 32/16/8 maps, downsampling by stride-2 convs, global average
pooling and a fully connected classifier; depth 6n+2. BN follows every conv. `plain` and
`resnet` build the very same layers and differ only in the shortcut.

Module names follow the widely used PyTorch CIFAR ResNet code (conv1, bn1, layer1..3, linear),
so its checkpoints load without renaming.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, cast

import msgspec
import torch
import torch.nn as nn
import torch.nn.functional as F

from reslab.errors import UserError

SHORTCUTS = ("A", "B", "C")


@dataclass(frozen=True)
class ModelConfig:
    """A network; the ranges bound what a config.json may describe (its size is checked when built)."""

    arch: str = "resnet"  # one of ARCHS (a registry: checked where a config.json is read)
    depth: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    # A: zero-pad identity, B: projection where the shape changes, C: always
    shortcut: Annotated[str, msgspec.Meta(pattern=f"^[{''.join(SHORTCUTS)}]$")] = "A"
    width: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 16  # filters of the first stage: width, 2*width, 4*width
    num_classes: Annotated[int, msgspec.Meta(ge=2, le=1_000_000)] = 10
    in_channels: Annotated[int, msgspec.Meta(ge=1, le=4)] = 3

    def to_dict(self) -> dict:
        return asdict(self)


def blocks_per_stage(arch: str, depth: int) -> int:
    """n for depth 6n+2 (two-layer blocks) or 9n+2 (three-layer bottlenecks)."""
    layers = 3 * ARCHS[arch].layers_per_block if arch in ARCHS else 6
    if depth < layers + 2 or (depth - 2) % layers:
        lower = max(layers + 2, (depth - 2) // layers * layers + 2)
        near = sorted({lower, lower + layers})
        raise UserError(
            f"depth {depth} is not valid for '{arch}': it must be {layers}n+2 "
            f"(the nearest valid depths are {' and '.join(map(str, near))})."
        )
    return (depth - 2) // layers


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class PadShortcut(nn.Module):
    """Option A: identity, or subsample by `stride` and zero-pad the new channels.

    The zeros go equally on both sides of the channel axis, as in the common PyTorch code (the
    paper does not say where); a module rather than a lambda so that models pickle.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.before = (cout - cin) // 2
        self.after = cout - cin - self.before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.before or self.after:
            x = F.pad(x, (0, 0, 0, 0, self.before, self.after))
        return x


def make_shortcut(option: str, cin: int, cout: int, stride: int, with_bn: bool = True) -> nn.Module:
    """The shortcut of one residual block under option A, B or C."""
    reshapes = stride != 1 or cin != cout
    if option == "C" or (option == "B" and reshapes):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, stride=stride, bias=False)]
        if with_bn:
            layers.append(nn.BatchNorm2d(cout))
        return nn.Sequential(*layers)
    return PadShortcut(cin, cout, stride)


def identity_bn(bn: nn.BatchNorm2d) -> None:
    """Make an eval-mode BN return its input: (x - 0) / sqrt(1 - eps + eps) * 1 + 0."""
    assert bn.running_mean is not None and bn.running_var is not None  # BN with running statistics
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.fill_(1 - bn.eps)
        bn.weight.fill_(1.0)
        bn.bias.zero_()


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, then (+ shortcut) and ReLU; with shortcut=None it is a plain block.

    The ReLU comes after the addition (paper, Fig. 2), so H(x) = relu(F(x) + x).
    """

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str | None):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = make_shortcut(shortcut, cin, cout, stride) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN that scales what the block adds (residual) or passes on (plain)."""
        return self.bn2

    @torch.no_grad()
    def make_identity(self) -> None:
        """Compute the identity (in eval mode, on the non-negative inputs a ReLU leaves): a plain
        block through Dirac convs and pass-through BNs, a residual one by a zero branch."""
        if self.shortcut is None:
            for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
                nn.init.dirac_(conv.weight)
                identity_bn(bn)
        else:
            self.bn2.weight.zero_()
            self.bn2.bias.zero_()


class PreActBlock(nn.Module):
    """Follow-up paper's unit: BN-ReLU-conv-BN-ReLU-conv added to an untouched identity path."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.shortcut = make_shortcut(shortcut, cin, cout, stride, with_bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The branch's last BN, before its last conv."""
        return self.bn2

    @torch.no_grad()
    def make_identity(self) -> None:
        """Compute the identity: nothing follows the branch's last conv, so zero it."""
        self.conv2.weight.zero_()


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: 1x1 reduce, 3x3, 1x1 expand (x4), identity path untouched."""

    expansion = 4
    layers = 3  # convs per block: depth 9n+2

    def __init__(self, cin: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        cout = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.shortcut = make_shortcut(shortcut, cin, cout, stride, with_bn=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + self.shortcut(x)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The branch's last BN, before its last conv."""
        return self.bn3

    @torch.no_grad()
    def make_identity(self) -> None:
        """Compute the identity: nothing follows the branch's last conv, so zero it."""
        self.conv3.weight.zero_()


@dataclass(frozen=True)
class Arch:
    """An architecture: its block (which knows how to become an identity), whether the block has a
    shortcut (a residual net: solid lines in the figures, expected not to degrade with depth),
    whether it is pre-activation (BN-ReLU before each conv, a final BN-ReLU before pooling), and
    how tables and figures name and colour it."""

    block: type
    title: str  # in tables and legends: ResNet-56
    panel: str  # a figure's panel of these nets
    colour: str
    shortcut: bool = True
    preact: bool = False
    default_shortcut: str = "A"  # the option used when none is asked for

    @property
    def residual(self) -> bool:
        return self.shortcut

    @property
    def layers_per_block(self) -> int:
        return getattr(self.block, "layers", 2)


# Every architecture reslab builds; adding one is its block class and a line here. `plain` and
# `resnet` are the very same layers, with and without the shortcut.
ARCHS = {
    "plain": Arch(BasicBlock, "plain", "plain networks", "#d62728", shortcut=False),
    "resnet": Arch(BasicBlock, "ResNet", "residual networks (ResNet)", "#1f77b4"),
    "preact": Arch(PreActBlock, "PreAct-ResNet", "pre-activation ResNets", "#2ca02c", preact=True),
    "preact-bottleneck": Arch(
        PreActBottleneck, "PreAct-ResNet", "pre-activation bottleneck ResNets", "#8c564b", preact=True,
        default_shortcut="B",
    ),
}  # fmt: skip


def arch(name: str) -> Arch:
    """The architecture called `name`, or a sentence naming the ones there are."""
    if name not in ARCHS:
        raise UserError(f"unknown architecture '{name}': choose one of {', '.join(ARCHS)}.")
    return ARCHS[name]


def display(arch: str, depth: int) -> str:
    """A network's name in tables and figures: plain-20, ResNet-56."""
    return f"{ARCHS[arch].title if arch in ARCHS else arch}-{depth}"


class CifarNet(nn.Module):
    """Stem, three stages of blocks, global average pooling, linear classifier."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        spec = arch(config.arch)
        if config.shortcut not in SHORTCUTS:
            raise UserError(f"unknown shortcut option '{config.shortcut}': choose A, B or C.")
        self.config = config
        n = blocks_per_stage(config.arch, config.depth)
        w = config.width
        self.preact = spec.preact
        self.conv1 = conv3x3(config.in_channels, w)
        # Post-activation nets normalise the stem here; pre-activation units normalise their
        # own input, so their net ends with a final BN-ReLU instead.
        self.bn1 = nn.BatchNorm2d(w) if not self.preact else nn.Identity()
        block, expansion = spec.block, getattr(spec.block, "expansion", 1)
        shortcut = config.shortcut if spec.shortcut else None
        cin = w
        stages = []
        for i, planes in enumerate((w, 2 * w, 4 * w)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, planes, stride, shortcut))
                cin = planes * expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn_final = nn.BatchNorm2d(cin) if self.preact else nn.Identity()
        self.linear = nn.Linear(cin, config.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He et al. 2015 initialisation, fan-out mode with the ReLU gain (the usual reading).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.no_grad()
    def scale_block_gamma(self, gamma: float) -> None:
        """Start every block's last BN with scale `gamma` instead of 1 (plain and residual alike).
        In a residual block it scales the branch F(x) against the shortcut, so a small gamma starts
        the net near the identity (as zero-gamma, Goyal et al. 2017); in a plain block the next
        BN undoes the scale, so only the classifier's input is scaled."""
        for block in self.blocks():
            bn = cast(nn.BatchNorm2d, block.last_bn)  # every block class has one
            bn.weight.fill_(gamma)

    def torch_default_init(self) -> None:
        """PyTorch's own default for the convolutions (uniform, bound 1/sqrt(fan_in)): weights with
        about 1/6 of He init's squared norm. Under BN a conv's output does not depend on its
        weights' scale, so the same lr then moves them about 6 times as far in direction."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x))
        if not self.preact:
            out = F.relu(out)
        out = self.layer3(self.layer2(self.layer1(out)))
        if self.preact:
            out = F.relu(self.bn_final(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)

    def blocks(self) -> list[nn.Module]:
        """All blocks in order, across the three stages."""
        return [*self.layer1, *self.layer2, *self.layer3]


def parse_net(name: str) -> ModelConfig:
    """'resnet-56', 'plain-20', 'preact-bottleneck-164': a network's name to its configuration
    (the benchmarks' --nets options)."""
    arch_name, _, depth = name.rpartition("-")
    if arch_name not in ARCHS or not depth.isdigit():
        raise UserError(f"'{name}' is not a network name: write ARCH-DEPTH, ARCH one of {', '.join(ARCHS)}.")
    blocks_per_stage(arch_name, int(depth))  # says which depths are valid
    return ModelConfig(arch_name, int(depth), ARCHS[arch_name].default_shortcut)


# Far above the paper's largest net (ResNet-1202, 19.4 M); a bigger request is a typo or a crafted
# file, refused before anything is allocated.
MAX_PARAMETERS = 200_000_000


def check_size(config: ModelConfig) -> None:
    """Refuse, before building, a network whose 3x3 convolutions alone would exceed MAX_PARAMETERS
    (about 18 n w^2 (1 + 4 + 16) weights for n blocks per stage of width w, 2w, 4w)."""
    arch(config.arch)
    for name in ("depth", "width", "num_classes", "in_channels"):
        v = getattr(config, name)
        if type(v) is not int or v < 1:
            raise UserError(f"the network's {name} must be a positive whole number, got {v!r}.")
    n = blocks_per_stage(config.arch, config.depth)
    estimate = 378 * n * config.width**2 + config.num_classes * 4 * config.width
    if estimate > MAX_PARAMETERS or config.num_classes > 100_000 or config.in_channels > 1024:
        raise UserError(
            f"{config.arch}-{config.depth} with width {config.width} would have about {estimate / 1e6:,.0f} million "
            f"parameters; reslab builds networks of at most {MAX_PARAMETERS // 1_000_000} million "
            "(ResNet-1202 has 19.4 million)."
        )


def state_mismatch(model: nn.Module, state: dict, optional: tuple[str, ...] = ("num_batches_tracked",)) -> str:
    """How a state dict fails to fit `model`, in words ('' when it fits): the tensors it has in
    excess, those it lacks (names ending in `optional` may be absent), those of the wrong shape."""
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.endswith(optional))
    shape = lambda v: tuple(v.shape) if torch.is_tensor(v) else type(v).__name__  # noqa: E731
    wrong = [k for k in sorted(set(state) & set(own)) if shape(state[k]) != tuple(own[k].shape)]
    parts = [
        f"unexpected tensors {unexpected[:4]}" if unexpected else "",
        f"missing tensors {missing[:4]}" if missing else "",
        "wrong shapes " + ", ".join(f"{k} {shape(state[k])} vs {tuple(own[k].shape)}" for k in wrong[:4])
        if wrong
        else "",
    ]
    return "; ".join(x for x in parts if x)


def build_model(config: ModelConfig) -> CifarNet:
    check_size(config)
    return CifarNet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Forward multiply-accumulates of convs and linear layers for one image, measured with hooks.

    BN, ReLU, pooling and the shortcut additions are not counted (as in the paper's FLOP
    figures): they cost O(activations), not O(activations x kernel).
    """
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def table(depths: list[int], shape: tuple[int, int, int] = (3, 32, 32), classes: int = 10) -> list[tuple]:
    """(name, depth, parameters, MACs) of every architecture at each of `depths` it can have (its
    default shortcut option; ResNet with option B too), counted from the built models."""
    rows = []
    variants = [(name, a.default_shortcut) for name, a in ARCHS.items()]
    variants.insert(variants.index(("resnet", "A")) + 1, ("resnet", "B"))  # the paper's option B beside A
    for name, shortcut in variants:
        spec = ARCHS[name]
        valid = [d for d in depths if d >= 3 * spec.layers_per_block + 2 and (d - 2) % (3 * spec.layers_per_block) == 0]
        for depth in valid:
            m = build_model(ModelConfig(name, depth, shortcut, num_classes=classes, in_channels=shape[0]))
            label = name if not spec.residual else f"{name} (option {shortcut})"
            rows.append((label, depth, count_parameters(m), count_macs(m, shape)))
    return rows


def describe(model: nn.Module, image_shape: tuple[int, int, int] | list[int]) -> dict:
    """What config.json records of a network, counted from the network itself: every writer
    (training, import, construction) uses this, so a run never carries another net's counts."""
    c, h, w = image_shape
    return {"parameters": count_parameters(model), "macs": count_macs(model, (c, h, w))}
