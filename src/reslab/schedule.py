"""The learning-rate schedule of a run, in one place: the training step, the CUDA-graph recorder
(by phase), the plan printed before training and the report all ask it. Imports no torch.

Three things here start a run gently, each with its own name:
- the paper's low-lr start (--warmup, He et al. 2016, for ResNet-110): lr --warmup-lr until the
  training error falls below --warmup-error, then --lr; its end is measured, not planned;
- the linear ramp (--linear-warmup N, Goyal et al. 2017): lr rising linearly from --warmup-lr
  to --lr over the first N iterations;
then the step schedule (lr / 10 at each milestone, the paper's) or a cosine to 0 (Loshchilov &
Hutter 2017). (train.ERROR_WINDOW, the iterations over which the low-lr start's training error
is measured, and step.EAGER_STEPS, the eager steps before a recording, are not schedules.)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from reslab.config import TrainConfig


@dataclass(frozen=True)
class Phase:
    """A stretch of the schedule: [start, end) in iterations; its lr is the same at every
    iteration (constant) or changes at each (a ramp, a cosine)."""

    name: str
    start: int
    end: int
    lr_start: float
    lr_end: float
    constant: bool


@dataclass(frozen=True)
class Schedule:
    lr: float
    total: int
    kind: str = "step"  # step or cosine
    milestones: tuple[int, ...] = ()  # iterations of the step schedule's drops
    ramp: int = 0  # the linear ramp's iterations
    start_lr: float = 0.01  # where the ramp and the paper's low-lr start begin
    low_lr_start: bool = False  # the paper's low-lr start (its end is measured during training)
    low_lr_until_error: float = 0.8

    @classmethod
    def of(cls, cfg: TrainConfig, total: int, low_lr_start: bool) -> Schedule:
        """The schedule of a run of `total` iterations with settings `cfg`."""
        milestones = tuple(round(f * total) for f in cfg.milestones) if cfg.schedule == "step" else ()
        return cls(
            cfg.lr, total, cfg.schedule, milestones, cfg.linear_warmup, cfg.warmup_lr, low_lr_start, cfg.warmup_error
        )

    def lr_at(self, iteration: int, low: bool = False) -> float:
        """The lr of an iteration (`low`: the paper's low-lr start is still on)."""
        if low:
            return self.start_lr
        if iteration < self.ramp:
            return self.start_lr + (self.lr - self.start_lr) * iteration / self.ramp
        if self.kind == "cosine":
            done = (iteration - self.ramp) / max(1, self.total - self.ramp)
            return self.lr * 0.5 * (1 + math.cos(math.pi * done))
        return self.lr * 0.1 ** sum(iteration >= m for m in self.milestones)

    def phases(self) -> list[Phase]:
        """The planned phases in order (the paper's low-lr start, whose end is measured, aside)."""
        return list(self.planned)

    @functools.cached_property
    def planned(self) -> tuple[Phase, ...]:
        """The phases, worked out once: the training step asks for its phase at every iteration."""
        found: list[Phase] = []
        ramp = min(self.ramp, self.total)
        if ramp:
            found.append(Phase("linear ramp", 0, ramp, self.lr_at(0), self.lr, False))
        if self.kind == "cosine":
            if ramp < self.total:
                found.append(Phase("cosine", ramp, self.total, self.lr_at(ramp), 0.0, False))
            return tuple(found)
        bounds = sorted({ramp, *(m for m in self.milestones if ramp < m < self.total), self.total})
        for a, b in zip(bounds, bounds[1:]):
            found.append(Phase("constant", a, b, self.lr_at(a), self.lr_at(a), True))
        return tuple(found)

    def phase_key(self, iteration: int, low: bool) -> tuple[str, int] | None:
        """What a recorded training step is keyed by: the phase of an iteration, when its lr stays
        the same through it; None where the lr changes at every iteration (not recordable)."""
        if low:
            return ("low-lr start", 0)
        for i, p in enumerate(self.planned):
            if p.start <= iteration < p.end:
                return ("phase", i) if p.constant else None
        return None

    def describe(self) -> str:
        """The schedule in words, as the plan before training and the report say it."""
        if self.kind == "cosine":
            text = f"lr {self.lr:g} falling to 0 along a cosine"
        elif self.milestones:
            text = f"lr {self.lr:g}, divided by 10 at iterations {', '.join(f'{m:,}' for m in self.milestones)}"
        else:
            text = f"lr {self.lr:g}"
        if self.ramp:
            text = f"a linear ramp from lr {self.start_lr:g} over the first {self.ramp:,} iterations, then {text}"
        if self.low_lr_start:
            text = (
                f"the paper's low-lr start (lr {self.start_lr:g} until training error < "
                f"{self.low_lr_until_error:.0%}), then {text}"
            )
        return text
