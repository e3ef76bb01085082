"""Several GPUs or machines: ``torchrun`` starts the processes, PyTorch's DistributedDataParallel
averages the gradients. Nothing home-made.

    torchrun --nproc_per_node=2 -m tinytribe.train.phase2 --study runs/demo_study --run-dir runs/kd

Every process builds the same model and the same global batch order; process ``rank`` of ``world``
takes its contiguous share of each global batch (:func:`shard`). Gradients equal those of one process
on the global batch when every share is as large and holds as many valid targets (the losses are means
over what a batch holds), dropout, stochastic depth and modality dropout are off, and the MoE's
auxiliary loss is left out (its balance statistics are each process's own: an approximation, as in
every MoE trained data-parallel). Rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Dist:
    """This process's place: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def from_env(environ: dict[str, str] | None = None) -> Dist:
    """The place ``torchrun`` gives this process (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process without."""
    env = os.environ if environ is None else environ
    return Dist(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def setup(device: str) -> Dist:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU), when there is one."""
    d = from_env()
    if d.active and not torch.distributed.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(d.local_rank)
        # a long validation or checkpoint push on rank 0 must not time the others out
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                                             timeout=datetime.timedelta(minutes=60))
    return d


def device_for(device: str, d: Dist) -> str:
    """Each process's own GPU (``cuda:<local_rank>``); other devices as they are."""
    return f"cuda:{d.local_rank}" if device == "cuda" and d.active else device


def wrap(model: nn.Module, d: Dist, device: str) -> nn.Module:
    """DDP around ``model`` in a process group; the model itself otherwise. ``find_unused_parameters``:
    an expert no token was routed to, or a head a phase does not use, has no gradient in a step."""
    if not d.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def shard(batch: list[int], d: Dist) -> list[int]:
    """Process ``d.rank``'s contiguous share of a global batch (sizes differ by at most one)."""
    n, w = len(batch), d.world
    lo, hi = d.rank * n // w, (d.rank + 1) * n // w
    return batch[lo:hi]


def any_true(flag: bool, d: Dist, device: str) -> bool:
    """True on every process when ``flag`` is true on any (a stop decided on one stops all)."""
    if not d.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(d: Dist) -> None:
    if d.active:
        torch.distributed.barrier()


def teardown(d: Dist) -> None:
    """Leave the process group together: a process that exits while another is still inside a
    collective makes gloo abort the other."""
    if d.active and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def broadcast(values: list[float], d: Dist, device: str) -> list[float]:
    """Rank 0's ``values`` on every process (state only rank 0 keeps: the best score, the collapse streak)."""
    if not d.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.broadcast(t, src=0)
    return t.tolist()
