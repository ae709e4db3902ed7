"""Process-group helpers for ``torchrun`` (NCCL on GPUs, gloo on CPU).

A single process (no ``WORLD_SIZE`` in the environment) needs no process group; everything here
then degrades to no-ops, so the training loop has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env(device_kind: str) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment, if any.

    Args:
        device_kind: ``"cuda"`` (NCCL) or ``"cpu"`` (gloo).
    Returns:
        this process's :class:`DistInfo`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not tdist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local_rank)
        tdist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank)


def all_reduce_sum(tensor: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (in place); identity for a single process."""
    if dist.enabled:
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
    return tensor


def all_true(flag, dist: DistInfo, device) -> bool:
    """Whether ``flag`` holds on every rank (one all-reduce), so that all ranks take the same branch:
    a rank that stopped alone would leave the others waiting at their next collective forever.

    Args:
        flag: this rank's bool (or bool tensor).
        dist: distributed info.
        device: where the process group reduces (CUDA for NCCL).
    Returns:
        the agreed bool.
    """
    t = torch.as_tensor(flag, device=device).to(torch.int32).reshape(1)
    if dist.enabled:
        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
    return bool(t)


def average_batchnorm(model: torch.nn.Module, dist: DistInfo) -> None:
    """Average every BatchNorm layer's running mean and variance over ranks (one all-reduce), so
    that the ranks evaluate, and rank 0 saves, one model: each rank's statistics moved with its own
    batches. Identity for a single process.

    Args:
        model: the bare network.
        dist: distributed info.
    """
    buffers = [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var) if b is not None]
    if not dist.enabled or not buffers:
        return
    flat = _flatten_dense_tensors(buffers)
    tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
    for buffer, mean in zip(buffers, _unflatten_dense_tensors(flat / dist.world, buffers)):
        buffer.copy_(mean)


def barrier(dist: DistInfo) -> None:
    if dist.enabled:
        tdist.barrier()


def shutdown(dist: DistInfo) -> None:
    if dist.enabled and tdist.is_initialized():
        tdist.destroy_process_group()
