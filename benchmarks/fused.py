"""Horizontal fusion: K networks of one shape trained as one module.

A small CIFAR network leaves a large GPU mostly idle: its kernels are short and the step is bound
by kernel launches. Fusing K networks (the seeds of one grid cell) gives every launch K networks'
work. torch.func.vmap runs one network's code over K stacked copies of its parameters and
buffers: each convolution becomes one grouped convolution, and each BatchNorm normalises every
network's channels over that network's own batch, with its own running statistics, exactly as if
the networks were trained apart. The loss is the sum of the K networks' mean losses, so each
parameter's gradient is its own network's; SGD with momentum and weight decay acts elementwise,
so one optimizer over the stacked parameters is K separate ones.

Whether this beats K processes on one GPU is measured by benchmarks/fused_speed.py (and by
benchmarks/gpu_check.sh); on a CPU it does not pay (benchmarks/results/fused_cpu.md).
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from reslab.errors import UserError
from reslab.models import CifarNet

# vmap has no batching rule for the as_strided_ inside global average pooling and
# loops over the K networks there: a few tiny tensors per step, not worth a warning every run.
warnings.filterwarnings("ignore", message=r".*batching rule for aten::as_strided_", category=UserWarning)


def bn_in_fp32(module, args):
    """BatchNorm's input in fp32 under bf16 autocast. vmap's batching rule for batch norm calls
    the kernel without the affine weights and applies them after; CUDA's kernel then takes no
    fp32 running statistics beside a bf16 input ('Expected running_mean to have type BFloat16',
    gpu_check on an H200), while its fp32 path is the precision autocast keeps for the statistics
    anyway. fp64 (the tests) and fp32 inputs pass as they are."""
    x = args[0]
    return (x.float(),) if x.dtype in (torch.bfloat16, torch.float16) else None


class FusedNets(nn.Module):
    """K CifarNets of one configuration as one module: input (K, N, C, H, W), output (K, N, classes)."""

    def __init__(self, nets: list[CifarNet]):
        super().__init__()
        configs = {net.config for net in nets}
        if len(configs) != 1:
            names = ", ".join(sorted(f"{c.arch}-{c.depth}" for c in configs))
            raise UserError(f"only networks of one configuration can be fused, not {names}.")
        params, buffers = stack_module_state(nets)
        self.k = len(nets)
        self.param_names, self.buffer_names = list(params), list(buffers)
        # Registered under positional names: module attributes cannot contain the dots of the
        # network's own names ('layer1.0.conv1.weight'), which state_dicts() restores.
        self.stacked = nn.ParameterList(nn.Parameter(p.detach().clone()) for p in params.values())
        for i, b in enumerate(buffers.values()):
            self.register_buffer(f"buffer{i}", b.clone())
        # The network's code without storage; kept out of the module tree so that its (meta)
        # parameters are not the fused module's.
        self.__dict__["template"] = copy.deepcopy(nets[0]).to("meta")
        for m in self.template.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.register_forward_pre_hook(bn_in_fp32)

    template: nn.Module  # set in __init__, outside the module tree

    def train(self, mode: bool = True) -> FusedNets:
        self.template.train(mode)
        return super().train(mode)

    def _buffers_list(self) -> list[torch.Tensor]:
        return [getattr(self, f"buffer{i}") for i in range(len(self.buffer_names))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = dict(zip(self.param_names, self.stacked))
        buffers = dict(zip(self.buffer_names, self._buffers_list()))

        def one(p, b, xk):
            return functional_call(self.template, (p, b), (xk,))

        return vmap(one)(params, buffers, x)

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """Each network's state_dict under CifarNet's names, so each loads into its own CifarNet."""
        tensors = list(zip(self.param_names, self.stacked)) + list(zip(self.buffer_names, self._buffers_list()))
        return [{name: t[k].detach().clone() for name, t in tensors} for k in range(self.k)]


def fused_loss(out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum over networks of each one's mean cross-entropy, and each network's error rate.

    out: (K, N, classes), y: (K, N); each network's gradient is that of its own mean loss.
    """
    n = y.shape[1]
    logits = out.flatten(0, 1).to(torch.promote_types(out.dtype, torch.float32))  # bf16 -> fp32
    loss = F.cross_entropy(logits, y.flatten(), reduction="sum") / n
    errors = (out.argmax(-1) != y).float().mean(1)
    return loss, errors
