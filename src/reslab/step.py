"""The training step (one mini-batch: augment, forward, backward, SGD update, metrics on the
device) and the two ways to run it: eagerly, or replayed as a CUDA graph.

On a GPU, reslab's small CIFAR nets are launch-bound: an eager ResNet-56 step issues some
thousand kernels and keeps an H200 about 2% busy. A CUDA graph records the whole step once and
replays it with one launch (3.9x faster measured, issue 14). A graph replays fixed memory, so the
graphed step reads its batch from a static index buffer, keeps every running sum in tensors it
updates in place, and counts iterations on the device; the lr is baked into the recorded SGD
update, so one graph is recorded per lr phase (warm-up 0.01, then 0.1, 0.01, 0.001).

`Graphed` runs the same static-buffer step on a CPU without recording anything (the fallback,
tested to equal the eager step bit for bit); on CUDA it records and replays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from reslab.augment import pad_crop_flip
from reslab.errors import UserError, one_line
from reslab.evaluate import normalize

# Real iterations run eagerly (on a side stream on CUDA) before each recording: they create the
# optimizer's momentum buffers and let cuDNN and autograd set up, as capture requires.
EAGER_STEPS = 3
RECORDING = threading.Lock()


@dataclass
class Sums:
    """The running metrics of the steps since the last evaluation, on the device and updated in
    place (a recorded graph keeps writing into the same memory)."""

    loss_sum: torch.Tensor  # float64
    wrong: torch.Tensor  # int64
    window_wrong: torch.Tensor  # int64, the warm-up's window
    first_bad: torch.Tensor  # int64: first iteration with a non-finite loss, -1 if none
    iteration: torch.Tensor  # int64: iterations done, counted on the device

    @classmethod
    def zeros(cls, device) -> Sums:
        z = lambda dtype: torch.zeros((), device=device, dtype=dtype)  # noqa: E731
        return cls(z(torch.float64), z(torch.int64), z(torch.int64), z(torch.int64) - 1, z(torch.int64))


@dataclass
class StepInputs:
    """What a step reads besides the model and optimizer."""

    net: torch.nn.Module  # the model, or its DDP / compiled wrapper
    opt: torch.optim.Optimizer
    train_x: torch.Tensor  # uint8 training images on the device
    train_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    aug_gen: torch.Generator | None  # None: no augmentation
    pad: int
    mine: slice  # this process's share of the global batch
    precision: str
    memory_format: torch.memory_format


def train_step(s: StepInputs, sums: Sums, idx: torch.Tensor, warming: bool) -> None:
    """One SGD step on the images `idx` at the optimizer's current lr; no host synchronisation."""
    device = s.train_x.device
    xb = s.train_x[idx]
    if s.aug_gen is not None:
        xb = pad_crop_flip(xb, s.pad, s.aug_gen)
    xb = normalize(xb[s.mine], s.mean, s.std).contiguous(memory_format=s.memory_format)
    yb = s.train_y[idx][s.mine]
    s.opt.zero_grad(set_to_none=True)
    # No autocast weight cache: a recorded graph must recompute its bf16 weight copies every replay.
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16", cache_enabled=False):
        logits = s.net(xb)
    loss = F.cross_entropy(logits.float(), yb)
    loss.backward()
    s.opt.step()
    loss = loss.detach()
    wrong = (logits.argmax(1) != yb).sum()
    sums.loss_sum.add_(loss * len(yb))
    sums.wrong.add_(wrong)
    sums.iteration.add_(1)
    # Remember where the loss first went NaN/inf, without a host sync.
    bad = (~torch.isfinite(loss)) & (sums.first_bad < 0)
    sums.first_bad.copy_(torch.where(bad, sums.iteration, sums.first_bad))
    if warming:
        sums.window_wrong.add_(wrong)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


class Eager:
    """The step as written, every iteration."""

    def __init__(self, inputs: StepInputs, sums: Sums):
        self.inputs, self.sums = inputs, sums

    def __call__(self, idx: torch.Tensor, lr: float, warming: bool, phase: Hashable | None = None) -> None:
        set_lr(self.inputs.opt, lr)
        train_step(self.inputs, self.sums, idx, warming)


class Graphed(Eager):
    """The step from a static index buffer, recorded once per phase of the schedule whose lr stays
    the same (Schedule.phase_key; None: the lr changes at each iteration, so the step runs
    eagerly) after EAGER_STEPS eager iterations, then replayed. On CUDA a recording is a CUDA graph; on a CPU it
    is the static-buffer step itself, run at each replay (the fallback: the same phases, buffers
    and counting, tested to equal the eager step bit for bit). `strict` (--cuda-graphs on) turns a
    failed recording into an error; otherwise training goes on eagerly, with one line saying why."""

    def __init__(self, inputs: StepInputs, sums: Sums, batch: int, strict: bool = False):
        super().__init__(inputs, sums)
        device = inputs.train_x.device
        self.static_idx = torch.zeros(batch, dtype=torch.long, device=device)
        self.graphed = device.type == "cuda"
        self.strict = strict
        self.recorded: dict[Hashable, Any] = {}  # phase -> something with .replay()
        self.phase: Hashable | None = None
        self.warm = 0
        self.recordings = 0  # phases recorded so far (tests check each phase is recorded once)

    def __call__(self, idx: torch.Tensor, lr: float, warming: bool, phase: Hashable | None = None) -> None:
        self.static_idx.copy_(idx, non_blocking=True)
        set_lr(self.inputs.opt, lr)
        if phase is None or phase not in self.recorded:
            if phase is None or self.phase != phase:
                self.phase, self.warm = phase, 0
            if phase is None or self.warm < EAGER_STEPS:  # a real iteration, counted as one
                self.warm += 1
                with self.side_stream():
                    train_step(self.inputs, self.sums, self.static_idx, warming)
                return
            # Phases come one after the other and never return: a phase that is over is never
            # replayed again, so its recording (and on CUDA its memory pool) is let go.
            self.recorded = {phase: self.record(warming)}
            self.recordings += 1
        self.recorded[phase].replay()

    @contextlib.contextmanager
    def side_stream(self):
        """Before a capture, CUDA work runs on a side stream (as torch.cuda.graph requires)."""
        if not self.graphed:
            yield
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream().wait_stream(side)

    def record(self, warming: bool):
        """The step of this phase, recorded; recording computes nothing, the first replay does."""
        # A recording is bound to the tensors that exist now (a CUDA graph to their memory): the
        # fallback binds a copy of the Sums holding the same tensors, so that a step which replaced
        # a sum instead of updating it in place fails on a CPU too.
        bound = dataclasses.replace(self.sums)
        step = Replay(lambda: train_step(self.inputs, bound, self.static_idx, warming))
        if not self.graphed:
            return step
        try:
            graph = torch.cuda.CUDAGraph()
            if self.inputs.aug_gen is not None:
                graph.register_generator_state(self.inputs.aug_gen)
            # One recording at a time in a process (torch.cuda.graph syncs the device, empties the
            # cache and captures on a stream of its own); thread_local lets the cells on other
            # threads (--share-gpu streams) go on meanwhile.
            with RECORDING, torch.cuda.graph(graph, capture_error_mode="thread_local"):
                step.fn()
            return graph
        except Exception as e:  # noqa: BLE001 - whatever capture raises, the eager step is correct
            if self.strict:
                raise UserError(
                    f"--cuda-graphs on: the training step cannot be recorded as a CUDA graph ({one_line(e)})."
                ) from None
            logging.getLogger(__name__).warning(
                f"the training step cannot be recorded as a CUDA graph ({one_line(e)}); training eagerly"
            )
            self.graphed = False
            self.recorded.clear()
            torch.cuda.current_stream().synchronize()
            return step


class Replay:
    """A recording on a CPU (or after a failed capture): the step itself, run at each replay."""

    def __init__(self, fn):
        self.fn = fn

    def replay(self) -> None:
        self.fn()


def resolve(choice: str, device: torch.device, distributed: bool) -> bool:
    """Whether to record the step as CUDA graphs: auto on CUDA for one process; on, or say why not."""
    if choice == "off":
        return False
    if distributed:
        if choice == "on":
            raise UserError("--cuda-graphs on works for one process; under torchrun use --cuda-graphs off (or auto).")
        return False
    if device.type != "cuda":
        if choice == "on":
            raise UserError("--cuda-graphs on needs a CUDA device; on a CPU use --cuda-graphs off (or auto).")
        return False
    return True
