"""torch.distributed for training: one code path for one process and for N processes started by ``torchrun``.

A process that ``torchrun`` started (env RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) joins the process
group inside ``process_group()``: gloo on CPU, nccl (one GPU per process) when CUDA is available. Without a group
every helper below is the identity of a one-process world, so ``iat.train.fit`` and the training functions never
branch on it.

Sharding is by user: a rank owns whole users (all of their rows, every split), so a user-order chunk, its context
and a user's histories never straddle ranks. Users are dealt to ranks in snake order by their train-row count,
largest first, so the shards hold near-equal numbers of train rows; every rank computes the same deal.

Batch semantics: ``batch_size`` stays the global batch of one optimizer step; each rank's batches hold
``batch_size // world`` rows and DDP averages the ranks' gradients, so a step sees the same number of rows
whatever the world size. Ranks step in lockstep (``lockstep``): an epoch ends when the first rank runs out of
batches, so a shard's few extra tail batches are dropped.

Buffers (the HGAQ codebooks' EMA state) follow rank 0: DDP broadcasts them at every forward, so the codebook EMA
learns from rank 0's shard while the gradients come from every rank.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as td
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")
Batch = dict[str, torch.Tensor]


def active() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if active() else 0


def world_size() -> int:
    return td.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def launched() -> bool:
    """Started by torchrun (which sets WORLD_SIZE in every worker's environment)."""
    return "WORLD_SIZE" in os.environ


def local_world_size() -> int:
    """Processes sharing this machine (and its cores)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def device() -> torch.device:
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if active() and td.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Join torchrun's process group for the block; a world of one process needs none."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    td.init_process_group(backend)
    try:
        yield
    finally:
        td.destroy_process_group()


# -- sharding --------------------------------------------------------------------------------------------------------
def deal_users(user_id: np.ndarray, weight: np.ndarray | None, world: int) -> np.ndarray:
    """Owner rank of every row: users dealt in snake order (0..w-1, w-1..0, ...) by weight, heaviest first,
    ties by user id, so the deal is the same on every rank and the per-rank weights differ by less than the
    heaviest user's."""
    users, inv = np.unique(np.asarray(user_id), return_inverse=True)
    load = np.bincount(inv, weights=None if weight is None else np.asarray(weight, np.float64), minlength=len(users))
    order = np.lexsort((users, -load))
    pos = np.arange(len(users)) % (2 * world)
    owner = np.empty(len(users), np.int64)
    owner[order] = np.where(pos < world, pos, 2 * world - 1 - pos)
    return owner[inv]


def shard_rows(user_id: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray | slice:
    """Rows of this rank's users (``deal_users``): an index array, or ``slice(None)`` (all rows, no copy) for
    one process."""
    if world_size() == 1:
        return slice(None)
    return np.flatnonzero(deal_users(user_id, weight, world_size()) == rank())


def local_batch_size(batch_size: int) -> int:
    """Rows of one rank's batch for a global batch of ``batch_size``."""
    b = batch_size // world_size()
    if b < 1:
        raise ValueError(f"batch_size {batch_size} is smaller than the {world_size()} processes")
    return b


# -- collectives (identities for one process) -----------------------------------------------------------------------
def _reduce(values: list[float], op: td.ReduceOp.RedOpType) -> list[float]:
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device())
    td.all_reduce(t, op)
    return t.tolist()


def all_sum(values: list[float]) -> list[float]:
    return _reduce(values, td.ReduceOp.SUM)


def all_max(values: list[float]) -> list[float]:
    return _reduce(values, td.ReduceOp.MAX)


def lockstep(items: Iterable[T]) -> Iterator[T]:
    """This rank's items while every rank still has one: DDP needs the same number of steps on every rank."""
    it = iter(items)
    while True:
        item = next(it, None)
        if _reduce([float(item is not None)], td.ReduceOp.MIN)[0] < 1:
            return
        yield item  # type: ignore[misc]  # not None here


def gather_to_main(obj: T) -> list[T] | None:
    """Every rank's ``obj`` in rank order on rank 0, None on the others."""
    if world_size() == 1:
        return [obj]
    out: list[Any] | None = [None] * world_size() if is_main() else None
    td.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: T) -> T:
    """Rank 0's ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


# -- training --------------------------------------------------------------------------------------------------------
def to_device(batch: Batch, dev: torch.device) -> Batch:
    return {k: v.to(dev, non_blocking=True) for k, v in batch.items()}


class _LossForward(nn.Module):
    """DDP synchronises the gradients of what runs through ``forward``; the models train through ``loss``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.loss(batch)


def loss_fn(model: nn.Module) -> Callable[[Batch], tuple[torch.Tensor, dict[str, float]]]:
    """``model.loss``, wrapped in DDP when there are several processes (gradients averaged over the ranks)."""
    if world_size() == 1:
        return model.loss
    dev = device()
    # find_unused_parameters: some parameters sit out a step (e.g. a ranker's empty-history vector when every
    # history in the batch is non-empty), which DDP must know of to finish its gradient reduction.
    return DistributedDataParallel(_LossForward(model), device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True)


# -- launching -------------------------------------------------------------------------------------------------------
def free_port() -> int:
    """A free TCP port on the loopback interface (the rendezvous never leaves this machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(processes: int, module: str, args: list[str]) -> None:
    """Run ``python -m module args`` in ``processes`` workers on this machine via torch.distributed.run."""
    rendezvous = ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", *rendezvous, "-m", module, *args]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}  # set: torchrun warns when unset
    rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        raise RuntimeError(f"distributed training with {processes} processes failed (torchrun exit code {rc}); the ranks' errors are above")
