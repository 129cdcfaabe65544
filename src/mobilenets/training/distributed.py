"""Data-parallel training under ``torchrun``: process group set-up, sum-reductions, SyncBN.

``torchrun --nproc_per_node N -m mobilenets train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` reads them and joins the group (nccl on GPU, gloo on CPU).
``--batch-size`` is per process, as in timm and torchvision: the global batch is
``batch_size * world``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False           # this run created the group and must destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum ``values`` over all processes (a no-op for one process)."""
        if self.enabled:
            values = values.to(self.device)
            dist.all_reduce(values)
            values = values.cpu()
        return values

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (keeps collective calls in step)."""
        if not self.enabled:
            return flag
        return bool(self.sum(torch.tensor([float(flag)])).item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup() -> Dist:
    """One process, or the torchrun group this process belongs to."""
    cuda = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), device, owns)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch, on any device.

    ``torch.nn.SyncBatchNorm`` runs on GPUs only; this one sums per-channel ``sum(x)``,
    ``sum(x^2)`` and the count over processes with an autograd-aware all-reduce, so the
    gradients are those of a single process seeing the whole batch (Ioffe & Szegedy 2015, Alg. 1
    over the union of the shards)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce
        c = x.shape[1]
        xf = x.float()
        xd = xf.double()            # sums in float64: E[x^2] - E[x]^2 without cancellation
        count = torch.full((1,), xf.numel() / c, dtype=torch.float64, device=x.device)
        stats = all_reduce(torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean64 = stats[:c] / n
        var = (stats[c:2 * c] / n - mean64 * mean64).clamp(min=0).float()
        mean = mean64.float()
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            shift = self.bias - mean * scale * self.weight
            scale = scale * self.weight
        else:
            shift = -mean * scale
        return (xf * scale[None, :, None, None] + shift[None, :, None, None]).to(x.dtype)


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of ``model`` synchronised over the process group (torch's SyncBN on
    GPU, :class:`SyncBatchNorm2d` elsewhere); parameters and running statistics are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats).to(device)
            sync.load_state_dict(child.state_dict())
            setattr(model, name, sync)
        else:
            convert_sync_bn(child, device)
    return model
