"""A run's training settings, each declared once: its name, type, default and, in the field's
metadata, its command-line help, group and range. The `train`, `experiment` and `demo` options
are generated from these fields (options.py), and so is their validation. Imports no torch, so
`reslab --help` stays fast."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, get_type_hints

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

# Where a setting's option is listed in --help.
GROUPS = {
    "model": "the network",
    "data": "the data",
    "schedule": "the recipe: length, optimiser, learning-rate schedule, initialisation",
    "run": "how and where it runs (these never change what a run learns)",
}


def setting(default: Any = None, help: str = "", group: str = "schedule", **option: Any) -> Any:
    """A TrainConfig field with its command-line option: `option` may give flag (default
    --NAME), metavar, minimum (numbers: the smallest value; strict=True: above it), factory
    (for a mutable default) and lazy (a help text computed when shown)."""
    meta = {"help": help, "group": group, **option}
    factory = option.get("factory")
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # the network
    arch: str = setting("resnet", "the architecture", "model", lazy="arch")
    depth: int = setting(20, "the depth", "model", lazy="depth", minimum=1)
    shortcut: str | None = setting(
        None,
        "A: zero-padding identity (default; B for bottlenecks), B: projection where the shape changes, C: always",
        "model",
    )
    width: int = setting(16, "filters in the first stage", "model", minimum=1)
    # the data
    dataset: str = setting(
        "cifar10", "cifar10, cifar100, mnist, fashion-mnist, digits, synthetic or imagefolder:PATH", "data"
    )
    data_dir: str | None = setting(
        None, "where datasets are found or downloaded (default ~/.cache/reslab/data, or $RESLAB_DATA)", "run"
    )
    download: bool = setting(
        True, "never download; fail with a message if the data is missing", "run", flag="--no-download"
    )
    subset: int | None = setting(
        None, "train on a class-balanced subset of N training images", "data", metavar="N", minimum=1
    )
    image_size: int | None = setting(
        None,
        "resize every image to NxN by area averaging (default: as stored; 32 for CIFAR)",
        "data",
        metavar="N",
        minimum=8,
    )
    test_subset: int | None = setting(
        None,
        "evaluate on N class-balanced test images (default: in proportion to --subset, all without it; 0: all)",
        "data",
        metavar="N",
        minimum=0,
    )
    val_split: int = setting(
        0, "hold out N training images for validation (the paper used 5000)", "data", metavar="N", minimum=0
    )
    # the recipe
    batch_size: int = setting(128, "images per mini-batch", minimum=1)
    lr: float = setting(0.1, "the learning rate after any warm-up", minimum=0, strict=True)
    momentum: float = setting(0.9, "SGD momentum, from 0 to below 1", minimum=0)
    weight_decay: float = setting(1e-4, "L2 weight decay", minimum=0)
    iterations: int | None = setting(None, "length of the run (default: the paper's 64000)", minimum=1)
    epochs: float | None = setting(None, "length of the run in epochs", minimum=0, strict=True)
    scale: float | None = setting(None, "length as a fraction of the paper's 64k iterations", minimum=0, strict=True)
    schedule: str = setting("step", "step: lr / 10 at --milestones (paper); cosine: lr falls to 0 along a half cosine")
    milestones: list[float] = setting(
        help="for the step schedule, the fractions of the run at which the lr drops tenfold (0.5,0.75: the "
        "paper's 32k and 48k of 64k)",
        metavar="F,F",
        factory=lambda: [0.5, 0.75],
    )
    linear_warmup: int = setting(
        0,
        "linear ramp: raise the lr from --warmup-lr to --lr over the first N iterations (0: none)",
        metavar="N",
        minimum=0,
    )
    init: str = setting(
        "he",
        "conv weights: he (He et al. 2015, the paper's) or torch (PyTorch's default, about 1/6 of the squared norm)",
    )
    block_gamma: float = setting(
        1.0,
        "start every block's last BN with scale G, plain and residual alike: in a residual block it scales "
        "F(x) against the shortcut (1: BN's own default, which the paper does not change)",
        metavar="G",
        minimum=0,
    )
    warmup: str = setting(
        "auto",
        "the paper's low-lr start: lr --warmup-lr until training error < --warmup-error, then --lr "
        "(auto: on for depth >= 110, as in the paper)",
    )
    warmup_lr: float = setting(
        0.01, "the lr that the paper's low-lr start and the linear ramp begin at", minimum=0, strict=True
    )
    warmup_error: float = setting(
        0.8,
        "the paper's low-lr start ends once training error falls below this fraction (the paper's 80%%)",
        minimum=0,
        strict=True,
    )
    augment: str = setting("auto", "pad-crop-flip (auto: on for natural images, off for digits)")
    eval_every: int | None = setting(None, "iterations between evaluations (default: one epoch)", minimum=1)
    seed: int = setting(0, "the seed of weights, data order and augmentation", minimum=0)
    # how and where it runs
    precision: str = setting(
        "auto", "auto: bf16 autocast where the hardware runs it natively (CUDA, AVX-512 BF16), else fp32", "run"
    )
    device: str = setting("auto", "auto (a GPU if there is one, else the CPU), cpu, cuda or cuda:N", "run")
    channels_last: bool = setting(
        True, "keep activations in the contiguous layout instead of channels_last", "run", flag="--no-channels-last"
    )
    compile: str = setting("auto", "torch.compile the training step (auto: for runs of 4000 iterations or more)", "run")
    cuda_graphs: str = setting(
        "auto",
        "record the whole training step as a CUDA graph per lr phase and replay it (auto: on a CUDA device, "
        "one process; several times faster for these small nets)",
        "run",
    )
    tensorboard: bool = setting(
        False, "also write TensorBoard event files to RUN/tensorboard (needs: pip install 'reslab[tensorboard]')", "run"
    )
    init_from: str | None = setting(
        None,
        "start from these weights (a model.safetensors, for example of a constructed net) instead of He init",
        "model",
        metavar="FILE",
    )
    sync_bn: bool = setting(
        False,
        "under torchrun: BatchNorm statistics over the whole global batch (default: per process, as in the paper)",
        "run",
    )

    def check_types(self) -> None:
        """Every field of the type it must have (a config built in Python, or read from a file)."""
        from reslab import schema

        try:
            schema.convert(asdict(self), TrainConfig)
        except schema.Invalid as e:
            raise UserError(f"the training setting {e}.") from None

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
        --config or read back from a run alike. The ranges are the fields' own (setting())."""
        if sum(v is not None for v in (self.iterations, self.epochs, self.scale)) > 1:
            raise UserError("give at most one of --iterations, --epochs and --scale.")
        for f in fields(self):
            problem = out_of_range(f.name, getattr(self, f.name))
            if problem:
                raise UserError(f"{flag(f.name)} {problem}.")
        if self.schedule == "cosine" and self.milestones != default("milestones"):
            raise UserError(
                "--milestones are the step schedule's lr drops; the cosine schedule has none. Leave them out, or "
                "use --schedule step."
            )
        if self.cuda_graphs == "on" and self.schedule != "step":
            raise UserError("--cuda-graphs on needs the step schedule (a graph holds one lr); use --cuda-graphs off.")


def refuse_unused(cells: list[TrainConfig]) -> None:
    """A setting typed (or given in --config) that none of the runs can use is refused, never
    silently dropped: the low-lr start's settings where no run warms up that way, the ramp's start
    where there is no ramp either. (--milestones with the cosine schedule: check_values.)"""
    warm = any(c.warmup == "on" or c.warmup == "auto" and c.depth >= 110 for c in cells)
    ramp = any(c.linear_warmup > 0 for c in cells)
    first = cells[0]
    if first.warmup_error != default("warmup_error") and not warm:
        raise UserError(
            "--warmup-error ends the paper's low-lr start, which no run here uses (--warmup is off, or auto below "
            "depth 110). Leave it out, or add --warmup on."
        )
    if first.warmup_lr != default("warmup_lr") and not warm and not ramp:
        raise UserError(
            "--warmup-lr is the lr that the low-lr start (--warmup) and the linear ramp (--linear-warmup) begin "
            "at, and no run here has either. Leave it out, or add --warmup on or --linear-warmup N."
        )


# Upper limits beside the fields' minimums: fractions, and sizes and lengths a machine can hold (depth and
# width are bounded by the network's size, models.check_size, which says how large it would be).
MAXIMUM = {
    "momentum": 1,
    "warmup_error": 1,
    "image_size": 1024,
    "seed": 2**63 - 1,
    "iterations": 10**9,
    "epochs": 10**6,
    "scale": 10**4,
    "linear_warmup": 10**9,
    "eval_every": 10**9,
    "batch_size": 2**20,
}


def out_of_range(name: str, v: Any) -> str | None:
    """What is wrong with setting `name` = `v` (of the right type), or None."""
    meta = SETTINGS[name].metadata
    if name in CHOICES and v is not None and v not in CHOICES[name]:
        return f"takes {', '.join(CHOICES[name][:-1])} or {CHOICES[name][-1]}, got '{v}'"
    if name == "milestones":
        return (
            None if all(0 < m <= 1 and math.isfinite(m) for m in v) else f"are fractions of the run (0 to 1), got {v}"
        )
    if v is None or isinstance(v, (str, bool)):
        return None
    low, strict, high = meta.get("minimum"), meta.get("strict", False), MAXIMUM.get(name, math.inf)
    in_range = math.isfinite(v) and (low is None or (v > low if strict else v >= low))
    in_range = in_range and (v < high if name == "momentum" else v <= high)
    if in_range:
        return None
    return f"must be {describe_range(low, strict, high, name)}, got {v}"


def describe_range(low, strict: bool, high, name: str) -> str:
    if name == "momentum":
        return "from 0 to below 1"
    lower = "finite" if low is None else ("a positive finite number" if strict and low == 0 else f"{low} or more")
    return lower if high == math.inf else f"{lower} and at most {high:,}"


def flag(name: str) -> str:
    """A setting's command-line option, as typed."""
    return SETTINGS[name].metadata.get("flag") or "--" + name.replace("_", "-")


SETTINGS = {f.name: f for f in fields(TrainConfig)}
TYPES = get_type_hints(TrainConfig)  # each setting's type, for values read from a file


def default(name: str):
    """A training setting's default."""
    f = SETTINGS[name]
    return f.default_factory() if callable(f.default_factory) else f.default


# Training settings that say where or how fast a run trains, not what it learns.
NOT_RECIPE = ("device", "data_dir", "download", "tensorboard", "sync_bn", "compile", "cuda_graphs")


def differences(old: dict, new: dict, ignore=NOT_RECIPE, labels=("there", "asked")) -> list[str]:
    """The training settings in which two config.json 'train' sections differ, as 'name old
    there, new asked' phrases (empty when they describe the same training)."""
    keys = sorted((set(old) | set(new)) - set(ignore))
    a, b = labels
    show = lambda v: f"{v:g}" if isinstance(v, float) else repr(v)  # noqa: E731  (30 and 2.0 read as 30 and 2)
    # A setting added to reslab after a file was written is missing from it, and was its default then.
    default = asdict(TrainConfig())
    old, new = {**default, **old}, {**default, **new}
    return [f"{k} {show(old.get(k))} {a}, {show(new.get(k))} {b}" for k in keys if old.get(k) != new.get(k)]


# The grid's varying settings; everything else in a run's training configuration is the recipe.
GRID_KEYS = ("arch", "depth", "seed")


def recipe(train: TrainConfig | dict) -> dict:
    """What every run of one experiment must share: its training settings less the grid's own and
    less where or how fast it trains."""
    train = asdict(train) if isinstance(train, TrainConfig) else train
    return {k: v for k, v in train.items() if k not in GRID_KEYS and k not in NOT_RECIPE}
