"""Data-parallel helpers: process-group setup under ``torchrun``, sharding, reductions.

``torchrun --nproc_per_node=K -m qallegro train cfg.yaml`` sets RANK/WORLD_SIZE/LOCAL_RANK; the
trainer then joins a process group (NCCL when training on CUDA, gloo otherwise), wraps the model in
DistributedDataParallel and shards every step's global batch over the ranks. A process group
initialised by the caller (e.g. tests using ``torch.multiprocessing.spawn``) is used as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_kind: str) -> DistInfo:
    """Join the process group that torchrun's environment describes (or the caller's group)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device_kind == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), owns_group=True)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _reduce_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``t`` over ranks (``t`` itself when not distributed)."""
    if not info.enabled:
        return t
    out = t.to(_reduce_device()).clone()
    dist.all_reduce(out)
    return out.to(t.device)


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True if ``flag`` is true on any rank (keeps stop decisions identical across ranks)."""
    if not info.enabled:
        return flag
    return bool(all_reduce_sum(torch.tensor([1.0 if flag else 0.0]), info).item() > 0)


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box: List = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def epoch_order(num: int, seed: int, epoch: int, shuffle: bool) -> List[int]:
    """The global order of training structures in one epoch (same on every rank)."""
    if not shuffle:
        return list(range(num))
    g = torch.Generator().manual_seed(int(seed) * 100003 + int(epoch))
    return torch.randperm(num, generator=g).tolist()


def step_batches(order: List[int], batch_size: int, info: DistInfo) -> List[Tuple[List[int], List[int]]]:
    """Split an epoch into global batches of ``batch_size``: ``(global batch, this rank's share)``.

    Rank r takes positions r, r+W, r+2W, ... of each global batch, so the union over ranks is exactly
    the batch one process would take (torch's DistributedSampler instead pads the epoch with repeated
    structures and batches each rank's stream separately, which would break that equality). The last
    partial batch is kept; a rank may then hold fewer structures (or none), which the loss
    normalisation by global counts handles.
    """
    out = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        out.append((batch, batch[info.rank :: info.world_size]))
    return out
