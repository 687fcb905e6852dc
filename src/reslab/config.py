"""A run's training settings: the one source of their names, defaults and choices (the CLI's
options are built from them) and of their validation. Imports no torch, so `reslab --help`
stays fast."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from reslab.errors import UserError

# The settings that take one of a few words, with their choices.
CHOICES = {
    "warmup": ("auto", "on", "off"),
    "augment": ("auto", "on", "off"),
    "compile": ("auto", "on", "off"),
    "cuda_graphs": ("auto", "on", "off"),
    "precision": ("auto", "fp32", "bf16"),
    "shortcut": ("A", "B", "C"),
    "schedule": ("step", "cosine"),
    "init": ("he", "torch"),
}


@dataclass
class TrainConfig:
    arch: str = "resnet"
    depth: int = 20
    shortcut: str | None = None  # None: A (the paper's CIFAR choice); B for preact-bottleneck
    width: int = 16
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = True
    subset: int | None = None
    image_size: int | None = None  # None: as stored; N: every image resized to NxN by area averaging
    test_subset: int | None = None  # None: in proportion to subset (all without one); 0: all
    val_split: int = 0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    iterations: int | None = None  # at most one of iterations / epochs / scale; default 64k
    epochs: float | None = None
    scale: float | None = None
    schedule: str = "step"  # step: lr / 10 at each milestone (paper); cosine: lr falls to 0 along a half cosine
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    linear_warmup: int = 0  # iterations over which the lr rises linearly from warmup_lr to lr (0: none)
    init: str = "he"  # conv weights: he (He et al. 2015, fan-out, the paper's); torch (PyTorch's default)
    block_gamma: float = 1.0  # initial scale of every block's last BN (1: BN's default; the paper does not say)
    warmup: str = "auto"  # auto: on for depth >= 110 (paper); on; off
    warmup_lr: float = 0.01
    warmup_error: float = 0.8
    augment: str = "auto"  # auto: crop+flip on natural images, none on digits; on; off
    eval_every: int | None = None  # iterations between evaluations; default one epoch
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast where the hardware runs it natively; fp32; bf16
    device: str = "auto"
    channels_last: bool = True
    compile: str = "auto"  # torch.compile the training step; auto: runs of >= 4000 iterations (accel.py)
    cuda_graphs: str = "auto"  # replay the whole step as a CUDA graph; auto: on CUDA, one process (step.py)
    tensorboard: bool = False  # also write TensorBoard event files to RUN/tensorboard
    init_from: str | None = None  # start from these weights (a model.safetensors) instead of He init
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch, not per rank

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown or not d:
            raise UserError(f"not a reslab training configuration (unknown keys: {', '.join(sorted(unknown)) or '-'}).")
        return cls(**d)

    def check_types(self) -> None:
        """Every field of the type it must have (a config.json may come from anyone)."""
        kinds: dict[str, type | tuple[type, ...]] = {
            "str": str, "int": int, "float": (int, float), "bool": bool, "list[float]": list,
            "str | None": (str, type(None)), "int | None": (int, type(None)), "float | None": (int, float, type(None)),
        }  # fmt: skip
        for f in fields(self):
            v = getattr(self, f.name)
            ok = isinstance(v, kinds[str(f.type)]) and not (isinstance(v, bool) and f.type != "bool")
            if f.type == "list[float]":
                ok = ok and all(isinstance(m, (int, float)) and not isinstance(m, bool) for m in v)
            if not ok:
                raise UserError(f"the training setting {f.name} must be {str(f.type).replace('|', 'or')}, got {v!r}.")

    def model_config(self, num_classes: int, in_channels: int):
        from reslab.models import ModelConfig

        return ModelConfig(self.arch, self.depth, self.resolved_shortcut(), self.width, num_classes, in_channels)

    def resolved_shortcut(self) -> str:
        """The shortcut option asked for, or the architecture's default (A; B for bottlenecks)."""
        from reslab.models import ARCHS

        return self.shortcut or (ARCHS[self.arch].default_shortcut if self.arch in ARCHS else "A")

    def validate(self) -> None:
        """Every setting of the type and in the range it must have, and a network that can be built."""
        from reslab.models import ModelConfig, arch, blocks_per_stage, check_size

        self.check_types()
        self.check_values()
        arch(self.arch)
        blocks_per_stage(self.arch, self.depth)
        check_size(ModelConfig(self.arch, self.depth, self.resolved_shortcut(), self.width))

    def check_values(self) -> None:
        """Every setting in its range (types checked already): for a config typed, given with
        --config or read back from a run alike."""
        if sum(v is not None for v in (self.iterations, self.epochs, self.scale)) > 1:
            raise UserError("give at most one of --iterations, --epochs and --scale.")
        for name in ("iterations", "epochs", "scale", "batch_size", "lr", "warmup_lr", "width", "block_gamma"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise UserError(f"--{name.replace('_', '-')} must be a positive finite number, got {v}.")
        for name in ("momentum", "weight_decay"):
            v = getattr(self, name)
            if not (0 <= v < (1 if name == "momentum" else math.inf)):
                limits = "from 0 to below 1" if name == "momentum" else "0 or more and finite"
                raise UserError(f"--{name.replace('_', '-')} must be {limits}, got {v}.")
        if not 0 <= self.seed < 2**63:
            raise UserError(f"--seed must be a whole number from 0 to 2**63-1, got {self.seed}.")
        if not 0 < self.warmup_error <= 1 or not all(0 < m <= 1 for m in self.milestones):
            raise UserError("warmup_error and the milestones are fractions between 0 and 1.")
        if self.test_subset is not None and self.test_subset < 0:
            raise UserError(f"--test-subset must be 0 (all) or more, got {self.test_subset}.")
        if self.cuda_graphs == "on" and self.schedule != "step":
            raise UserError("--cuda-graphs on needs the step schedule (a graph holds one lr); use --cuda-graphs off.")
        if self.linear_warmup < 0:
            raise UserError(f"--linear-warmup must be 0 or more iterations, got {self.linear_warmup}.")
        if self.image_size is not None and not 8 <= self.image_size <= 1024:
            raise UserError(f"--image-size must be from 8 to 1024 pixels, got {self.image_size}.")
        if self.val_split < 0:
            raise UserError(f"--val-split must be 0 or more, got {self.val_split}.")
        for name in ("eval_every", "subset"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be a positive whole number, got {v}.")
        if self.depth <= 0:
            raise UserError(f"--depth must be a positive whole number, got {self.depth}.")
        for name, choices in CHOICES.items():
            v = getattr(self, name)
            if v not in choices and not (name == "shortcut" and v is None):
                raise UserError(
                    f"--{name.replace('_', '-')} takes {', '.join(choices[:-1])} or {choices[-1]}, got '{v}'."
                )


def default(name: str):
    """A training setting's default, for the CLI's options."""
    f = next(f for f in fields(TrainConfig) if f.name == name)
    return f.default_factory() if callable(f.default_factory) else f.default
