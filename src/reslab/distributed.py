"""One run on several processes, started by torchrun: DistributedDataParallel with gloo on CPU
and nccl on GPU.

Every rank draws the same global batch (same data order, same augmentation draws) and trains
on its own contiguous slice of it, so the global batch stays the configured one and the data
seen is exactly that of a single-process run. BatchNorm normalises per rank by default, as in
the paper (two GPUs, 64 images each); with sync_bn it normalises over the whole global batch.
Only rank 0 writes to the run directory.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from reslab.errors import UserError


class RelayedError(UserError):
    """An error rank 0 found and sent to the other ranks (the CLI prints it once, on rank 0)."""


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Group:
    """This process's place in a run: rank, number of ranks, and a gloo group for the host-side
    agreements (stop requests, rank 0's decisions) that must not wait on a GPU stream."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    control: object = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of n items (equal parts when n divides evenly)."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t)
        return t

    def first(self, iteration: torch.Tensor) -> torch.Tensor:
        """The smallest non-negative iteration over the ranks (-1 where a rank has none)."""
        if not self.active:
            return iteration
        big = torch.iinfo(torch.int64).max
        t = torch.where(iteration < 0, big, iteration).clone()
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return torch.where(t == big, -1, t)

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank (a host-side vote)."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return bool(t.item())

    def from_main(self, obj):
        """Rank 0's `obj`, on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def together(self, fn):
        """Run fn on every rank; if it fails on any, fail on all, and say each different reason once
        (rank 0's by rank 0, another rank's own by that rank)."""
        try:
            result, error = fn(), None
        except UserError as e:
            result, error = None, e
        if not self.active:
            if error is not None:
                raise error
            return result
        messages = [None] * self.world
        dist.all_gather_object(messages, None if error is None else str(error), group=self.control)
        if error is not None and (self.main or messages[0] != str(error)):
            raise error
        if any(m is not None for m in messages):
            raise RelayedError(next(m for m in messages if m is not None))
        return result

    def decide(self, fn):
        """Run fn on rank 0 only and give its result, or its UserError, to every rank."""
        result, error = None, None
        if self.main:
            try:
                result = fn()
            except UserError as e:
                error = e
        result, message = self.from_main((result, None if error is None else str(error)))
        if error is not None:
            raise error
        if message is not None:
            raise RelayedError(message)
        return result


@contextmanager
def session(device_name: str):
    """The process group for this run when torchrun started several processes; a one-process
    Group otherwise. Yields (group, device)."""
    world = env_world()
    if world <= 1:
        yield Group(), None
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for, but this PyTorch sees no GPU; use --device cpu.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device_name in ("auto", "cpu"):
        device = torch.device("cpu")
    else:
        raise UserError(f"--device {device_name} cannot be used with torchrun: use auto, cpu or cuda.")
    backend = "nccl" if cuda else "gloo"
    try:
        dist.init_process_group(backend)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"could not join the torchrun process group ({backend}): {e}") from None
    control = dist.new_group(backend="gloo") if cuda else None
    try:
        yield Group(dist.get_rank(), dist.get_world_size(), local_rank, control), device
    finally:
        # Tear down together: a rank that leaves while another still talks to it makes gloo
        # abort the process at exit. The barrier gives up on a rank that crashed.
        try:
            dist.monitored_barrier(group=control, timeout=timedelta(seconds=60))
        except RuntimeError:
            pass
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, group: Group, device: torch.device) -> torch.nn.Module:
    """The module to train with: DDP around `model` when several ranks train it."""
    if not group.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def share_buffers(model: torch.nn.Module, group: Group) -> None:
    """Give every rank rank 0's BatchNorm running statistics (with per-rank BatchNorm they drift
    apart between DDP's own broadcasts)."""
    if group.active:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def convert_sync_bn(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """BatchNorm over the global batch: PyTorch's SyncBatchNorm on GPUs; on CPUs, where it is
    not supported, GlobalBatchNorm2d below (the same statistics, through gloo)."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            g = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum)
            g.load_state_dict(child.state_dict())
            setattr(model, name, g)
        else:
            convert_sync_bn(child, device)
    return model


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole global batch: the per-channel
    sums go through SumOverRanks, whose backward pass sums the gradient terms as well. Same
    parameters and buffers as BatchNorm2d, so the weights load into a plain network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        xf = x.float()
        local = torch.stack([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3))])
        count = torch.tensor(float(x.numel() // x.shape[1]), device=x.device)
        total = SumOverRanks.apply(torch.cat([local, count.expand(1, x.shape[1])]))
        n = total[2, 0]
        mean = total[0] / n
        var = total[1] / n - mean * mean  # biased, as BatchNorm normalises with
        assert self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        shape = (1, -1, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return (y * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)


class SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) that autograd can go through: the gradient of a sum over ranks is the
    sum over ranks of the gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad
