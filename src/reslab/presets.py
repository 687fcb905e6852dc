"""Named recipes for `reslab experiment --preset NAME`: the same settings for every network of
the grid (plain and residual alike, so the shortcuts stay the only difference), with each
departure from the paper named, its reason, and the measurement that chose it.

Imports no torch: the CLI reads these to set its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Deviation:
    setting: str
    paper: str
    preset: str
    why: str
    fields: tuple[str, ...] = ()  # the TrainConfig fields it sets


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    depths: list[int]
    seeds: int
    train: dict  # TrainConfig fields
    deviations: list[Deviation] = field(default_factory=list)
    study: str = ""  # where the measurements that chose it are

    def in_force(self, train: dict) -> list[Deviation]:
        """The departures that a run's training settings still have (the user may have overridden some)."""
        return [d for d in self.deviations if all(train.get(f) == self.train[f] for f in d.fields)]


CPU = Preset(
    name="cpu",
    summary="the degradation experiment on real CIFAR-10 in about an hour on a 2-core CPU",
    depths=[20, 56],
    seeds=2,
    train=dict(
        image_size=16,
        iterations=2000,
        schedule="cosine",
        linear_warmup=200,
        block_gamma=0.3,
        eval_every=100,
        test_subset=2000,
    ),
    deviations=[
        Deviation(
            "image size",
            "32x32",
            "16x16 (area-averaged, as in downsampled CIFAR)",
            "a step costs about a quarter, so four times the iterations fit in the hour",
            ("image_size",),
        ),
        Deviation(
            "length",
            "64,000 iterations",
            "2,000 iterations of 128 images",
            "what fits in about an hour for 2 seeds of plain-20, plain-56, ResNet-20 and ResNet-56",
            ("iterations",),
        ),
        Deviation(
            "schedule",
            "lr 0.1, divided by 10 at 50% and 75%",
            "lr rising linearly from 0.01 to 0.1 over 200 iterations, then a cosine to 0",
            "at lr 0.1 from the first step ResNet-56 blows up and sits near chance for hundreds of iterations, "
            "and drops at 50%/75% of a short run freeze it before it has recovered",
            ("schedule", "linear_warmup"),
        ),
        Deviation(
            "init of each block's last BN",
            "scale 1 (BN's default; the paper does not say)",
            "scale 0.3 (--block-gamma 0.3), in plain and residual blocks alike",
            "a residual block then adds 0.3 of F(x) to x at the start, so ResNet-56 starts nearer the identity "
            "instead of summing 27 unit-scale branches; in a plain block the next BN undoes the scale. Without it "
            "ResNet-56 ended 1.8 points behind ResNet-20 (seeds 100, 101); with it, 1.3 points ahead (seeds 104, 105)",
            ("block_gamma",),
        ),
        Deviation(
            "evaluation",
            "every 10k test images",
            "2,000 class-balanced test images, every 100 iterations",
            "the training-error curve at a resolution that shows the crossovers, for a few seconds per evaluation",
            ("eval_every", "test_subset"),
        ),
    ],
    study="benchmarks/results/cpu_recipe.md",
)

PRESETS = {p.name: p for p in (CPU,)}
