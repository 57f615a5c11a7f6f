"""torch.distributed helpers shared by training, feature extraction and slide features.

Launch model: ``torchrun`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; without
them (or with ``WORLD_SIZE=1``) everything runs in one process and no process
group is created. Backend: nccl on CUDA, gloo on CPU. Every helper is a no-op
(or the trivial answer) in a single process, so callers never branch on it.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        world_size: Number of processes.
        rank: Global rank of this process.
        local_rank: Rank on this machine (selects the GPU).
        device: ``"cpu"`` or ``"cuda:{local_rank}"``.
        created: True when :func:`init_distributed` created the process group.
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: str = "cpu"
    created: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str | None = None) -> str:
    """``None``/``"auto"`` → ``cuda`` when available else ``cpu``; ``cuda`` → ``cuda:{LOCAL_RANK}`` under torchrun."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def init_distributed(device: str | None = None) -> DistContext:
    """Join the torchrun job if there is one; return the :class:`DistContext`.

    Reuses an already initialised process group. A group created here is
    destroyed at interpreter exit.
    """
    device = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world <= 1:
        return DistContext(1, 0, 0, device, False)
    import torch.distributed as dist

    if dist.is_initialized():
        return DistContext(dist.get_world_size(), dist.get_rank(), local_rank, device, False)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    atexit.register(_destroy)
    return DistContext(dist.get_world_size(), dist.get_rank(), local_rank, device, True)


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # best effort at exit
            pass


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        torch.distributed.barrier()


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` across ranks in place (and return it)."""
    if ctx.distributed:
        torch.distributed.all_reduce(tensor)
    return tensor
