"""Data-parallel training under torchrun: the same loop on N processes, one per GPU (gloo on CPU).

``fewstep run --nproc N graph.json`` starts N copies of the graph with torch's elastic launcher; every trainer
node then reaches :func:`~fewstep.nodes.core.train.loop.fit`, which joins the process group described by
torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and trains
data-parallel:

* global batch B, local batch B / N (:func:`local_batch_size`, which the packs' step functions use); rank r
  draws step n from its own generator (``step_generator(seed, n, rank=r)``; rank 0 draws what a 1-process run
  draws), so the N local batches are independent draws and one step sees B samples, as the 1-process run;
* the step runs as the forward of a ``DistributedDataParallel`` module (:func:`data_parallel`), so every use
  of the student's parameters inside the step - several network calls, two networks (TDM), unused ones - is
  seen by DDP, whose gradient all-reduce averages the N local-mean gradients: the gradient of the mean loss
  over the B samples;
* the reported loss is the mean over ranks (:func:`mean_over_ranks`); progress, previews and checkpoint files
  come from rank 0 only. DDP keeps the weights and optimizer states of all ranks identical, so rank 0's
  checkpoint is the whole run, consolidated: it resumes on any number of processes.

A dead worker: torchrun's elastic agent sees the exit and stops the other workers; a collective waiting for a
dead peer fails after :func:`timeout_seconds` at the latest (gloo notices a closed peer at once).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

TIMEOUT_ENV = "FEWSTEP_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 900.0

StepFn = Callable[[int, torch.Generator], Tensor]


@dataclass(frozen=True)
class World:
    """Where this process stands in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    try:
        return int(text) if text else default
    except ValueError as err:
        raise ValueError(f"environment variable {name}={text!r} is not an integer (torchrun sets it)") from err


def env_world() -> World:
    """The world torchrun describes in this process's environment (1 process without it)."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"torchrun environment is inconsistent: RANK={rank}, WORLD_SIZE={size}")
    return World(rank=rank, size=size, local_rank=_env_int("LOCAL_RANK", rank))


def current_world() -> World:
    """The joined process group if any, else what the environment says the run will be."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", dist.get_rank()))
    return env_world()


def timeout_seconds() -> float:
    """How long a collective waits for the other ranks (``$FEWSTEP_DIST_TIMEOUT`` seconds, default 900)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError as err:
        raise ValueError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds") from err
    if value <= 0:
        raise ValueError(f"{TIMEOUT_ENV} must be > 0 seconds, got {value}")
    return value


def join(device: str) -> World:
    """Join torchrun's process group once per process (NCCL for CUDA, gloo for CPU); no-op for 1 process.

    CUDA: one process per GPU, ``torch.cuda.set_device(LOCAL_RANK)``; a model placed on another GPU is an error
    (``fewstep run --nproc`` selects the local GPU before any node runs).
    """
    env = env_world()
    if env.size <= 1 or dist.is_initialized():
        return current_world()
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index not in (None, env.local_rank):
            raise ValueError(f"rank {env.rank} trains on {dev} but its GPU is cuda:{env.local_rank} (LOCAL_RANK): "
                             "load the models on the process's own GPU (torch.cuda.set_device(LOCAL_RANK))")
        torch.cuda.set_device(env.local_rank)
        dist.init_process_group("nccl", timeout=timedelta(seconds=timeout_seconds()),
                                device_id=torch.device("cuda", env.local_rank))
    elif dev.type == "cpu":
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_seconds()))
    else:
        raise ValueError(f"data-parallel training runs on CUDA (NCCL) or CPU (gloo), not on {dev}")
    return current_world()


def leave() -> None:
    """Destroy this process's process group (end of a distributed run); no-op when none.

    A barrier first: a rank that tears gloo down while a peer still uses the pair makes the peer's gloo thread
    throw, and the peer dies with "terminate called without an active exception" (SIGABRT, seen in CI).
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_batch_size(global_batch: int, world: World | None = None) -> int:
    """This rank's share B / N of the global batch B (ValueError when N does not divide B)."""
    world = world or current_world()
    if global_batch % world.size:
        raise ValueError(f"batch_size {global_batch} does not split over {world.size} processes: choose a "
                         f"multiple of {world.size} (each process trains batch_size / {world.size} samples)")
    return global_batch // world.size


class _StepModule(nn.Module):
    """The training step as a module's forward: DDP then sees every use of ``student``'s parameters."""

    def __init__(self, student: nn.Module, step_fn: StepFn) -> None:
        super().__init__()
        self.student = student
        self.step_fn = step_fn

    def forward(self, step: int, gen: torch.Generator) -> Tensor:
        return self.step_fn(step, gen)


def data_parallel(student: nn.Module, step_fn: StepFn, world: World, device: str) -> StepFn:
    """``step_fn`` whose backward all-reduces (averages) the student's gradients over ranks (DDP).

    Building the DDP module broadcasts rank 0's parameters and buffers, so all ranks start identical.
    ``find_unused_parameters``: a step may leave trainable parameters unused (TDM-unify's K, a LoRA branch);
    ``forward_sync_buffers=False``: no collective inside the forward, whose network calls may differ per rank.
    """
    if not world.distributed:
        return step_fn
    from torch.nn.parallel import DistributedDataParallel

    cuda = torch.device(device).type == "cuda"
    return DistributedDataParallel(_StepModule(student, step_fn), device_ids=[world.local_rank] if cuda else None,
                                   forward_sync_buffers=False, find_unused_parameters=True)


def _collective_device(world: World) -> torch.device:
    return torch.device("cuda", world.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def mean_over_ranks(value: Tensor, world: World) -> Tensor:
    """The mean of a scalar over ranks (every rank gets it); the value itself for 1 process."""
    if not world.distributed:
        return value.detach()
    out = value.detach().float().reshape(1).to(_collective_device(world))
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out[0] / world.size


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when ``flag`` is true on some rank (ranks stop together, e.g. on a time cap)."""
    if not world.distributed:
        return flag
    out = torch.tensor([1.0 if flag else 0.0], device=_collective_device(world))
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return bool(out.item() > 0)


def from_main(path: Path | None, world: World) -> Path | None:
    """Rank 0's value of ``path`` on every rank (the checkpoint a resume starts from)."""
    if not world.distributed:
        return path
    box: list[Path | None] = [path]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def broadcast_module(module: nn.Module, world: World) -> None:
    """Copy rank 0's parameters and buffers of ``module`` to every rank (e.g. a fresh EMA target)."""
    if not world.distributed:
        return
    device = _collective_device(world)
    for tensor in [*module.parameters(), *module.buffers()]:
        moved = tensor.data.to(device)
        dist.broadcast(moved, src=0)
        if moved is not tensor.data:
            tensor.data.copy_(moved)


def barrier(world: World) -> None:
    """Wait for every rank (a no-op for 1 process)."""
    if world.distributed:
        dist.barrier()


@contextmanager
def main_rank_first(device: str) -> Iterator[World]:
    """Rank 0 runs the block, then the other ranks do: for a node that writes a shared file (a dataset) and
    resumes from it - rank 0 writes it once, the others find it done instead of writing the same file.

    The others wait in a barrier, so the block must end within :func:`timeout_seconds`; if rank 0 fails inside
    it, it leaves without the barrier and the launcher stops the run.
    """
    world = join(device)
    if not world.is_main:
        barrier(world)
    yield world
    if world.is_main:
        barrier(world)


def average_gradients(params: Iterable[nn.Parameter], world: World) -> None:
    """Replace each parameter's gradient by its mean over ranks (one all-reduce of the flattened gradients).

    For a loop without DDP (the culture pack's PPO): with equal local batches the mean of the N local-mean
    gradients is the gradient of the mean loss over the global batch. Every rank must hold a gradient for the
    same parameters (those without one are skipped on all ranks alike)."""
    if not world.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]).to(_collective_device(world))
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_std_over_ranks(x: Tensor, dims: tuple[int, ...], world: World) -> tuple[Tensor, Tensor]:
    """Mean and unbiased std of ``x`` over ``dims`` and over all ranks' ``x`` together (keepdim), as
    ``x.mean(dims)`` / ``x.std(dims)`` of the ranks' tensors concatenated; every rank gets them.

    Two passes (mean, then the summed squared deviations): no cancellation of Σx² − n·mean²."""
    count = 1
    for d in dims:
        count *= x.shape[d]
    if not world.distributed:
        return x.mean(dims, keepdim=True), x.std(dims, keepdim=True)
    device = _collective_device(world)
    total = x.sum(dims, keepdim=True).to(device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    mean = (total / (count * world.size)).to(x.device)
    squares = ((x - mean) ** 2).sum(dims, keepdim=True).to(device)
    dist.all_reduce(squares, op=dist.ReduceOp.SUM)
    return mean, (squares / (count * world.size - 1)).sqrt().to(x.device)


def gather_objects(value: object, world: World) -> list[object]:
    """Every rank's ``value`` (picklable, small), in rank order, on every rank; ``[value]`` for 1 process."""
    if not world.distributed:
        return [value]
    out: list[object] = [None] * world.size
    dist.all_gather_object(out, value)
    return out
