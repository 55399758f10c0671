"""Trainer machinery shared by the distillation packs: a resumable, deterministic training loop.

What it gives a pack:
    * :func:`step_generator` — every random draw of step n comes from a generator seeded by (seed, n), so a
      run resumed from a checkpoint at step n replays exactly the steps an uninterrupted run would take;
    * :class:`Checkpointer` — safetensors checkpoints (trainable weights, EMA weights, optimizer state, the
      loss history) every N steps into a run folder, atomically written, the last ``keep`` kept;
    * :func:`fit` — the loop: loss → backward → clip → step → EMA → progress (loss, lr, preview) →
      checkpoint; an interrupt (or any exception) after step n saves a checkpoint at n first;
    * LoRA through peft (:func:`add_lora`, :func:`merged_state_dict`) and :class:`EMA`.

Progress events carry ``loss``, ``lr`` and ``step`` as named numbers (see :func:`report_training`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from fewstep.app.api import current_context
from fewstep.nodes.core.train.cpu_threads import adjust_cpu_threads
from fewstep.nodes.core.train.distributed import (
    World,
    any_rank,
    barrier,
    broadcast_module,
    current_world,
    data_parallel,
    from_main,
    join,
    mean_over_ranks,
)
from fewstep.nodes.core.train.sharded import ShardedTraining, count_trainable, full_value, shard_mode

CKPT_PATTERN = re.compile(r"^step_(\d{8})\.safetensors$")
RANK_STRIDE = 0x9E3779B97F4A7C15  # odd 64-bit constant (2^64 / golden ratio): ranks' seeds far apart


def step_generator(seed: int, step: int, device: torch.device | str = "cpu", rank: int = 0) -> torch.Generator:
    """A generator for training step ``step`` of run ``seed`` (independent of how the run got there).

    ``rank`` r > 0 of a data-parallel run gets its own stream (its share of the global batch); rank 0 draws
    what a 1-process run draws.
    """
    gen = torch.Generator(device=device)
    gen.manual_seed((int(seed) * 1_000_003 + int(step) + int(rank) * RANK_STRIDE) % (2**63 - 1))
    return gen


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """name -> parameter for every parameter that requires grad (LoRA: only the adapters)."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


class EMA:
    """Exponential moving average of a module's trainable parameters into a frozen copy.

    θ⁻ ← decay · θ⁻ + (1 - decay) · θ (the consistency-model EMA target; SLAM uses 0.95).
    """

    def __init__(self, online: nn.Module, target: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.online = trainable_parameters(online)
        target_params = dict(target.named_parameters())
        missing = [name for name in self.online if name not in target_params]
        if missing:
            raise ValueError(f"EMA target lacks parameters {missing[:3]}")
        self.target = {name: target_params[name] for name in self.online}
        for p in target.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.online.items():
            value = full_value(p.detach())              # FSDP: the sharded parameter's whole value
            self.target[name].lerp_(value.to(self.target[name].dtype), 1.0 - self.decay)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def _optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state (``optimizer.state_dict()``) as flat tensors ``optim.<param index>.<key>`` + JSON-able rest."""
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_optimizer_tensors` (a dict for ``optimizer.load_state_dict``)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


@dataclass
class Checkpoint:
    """A loaded checkpoint: step, tensors by prefix and the JSON metadata."""

    step: int
    tensors: dict[str, Tensor]
    meta: dict[str, Any]

    def prefixed(self, prefix: str) -> dict[str, Tensor]:
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


@dataclass
class Checkpointer:
    """Writes ``step_XXXXXXXX.safetensors`` into ``folder`` every ``every`` steps, keeping the last ``keep``.

    Args:
        folder: the run folder (created on first save), e.g. ``models/checkpoints/distill/<run>``.
        every: save period in steps (0 = only on interrupt / at the end).
        keep: how many checkpoints stay on disk.
    """

    folder: Path
    every: int = 100
    keep: int = 2

    def paths(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if CKPT_PATTERN.match(p.name))

    def latest(self) -> Path | None:
        found = self.paths()
        return found[-1] if found else None

    def save(self, step: int, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
        """Atomically write a checkpoint (tmp file + rename, so a crash never leaves half a file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step_{step:08d}.safetensors"
        tmp = path.with_suffix(".tmp")
        flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(flat, str(tmp), metadata={"step": str(step), "meta": json.dumps(meta)})
        os.replace(tmp, path)
        for old in self.paths()[: -self.keep]:
            old.unlink()
        return path

    @staticmethod
    def load(path: Path) -> Checkpoint:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
        return Checkpoint(int(metadata["step"]), load_file(str(path)), json.loads(metadata["meta"]))


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------


def report_training(step: int, total: int, metrics: dict[str, float], preview: Any = None) -> None:
    """Send a training progress event (raises the engine's interrupt when the job was stopped).

    The ``progress`` websocket message gets ``value=step, max=total`` plus the metrics as named numbers
    (``loss``, ``lr``, ``step``), which ``frontend/loss_curve.js`` plots live. No-op outside the executor and
    on data-parallel ranks other than 0 (rank 0 reports for the run).
    """
    ctx = current_context()
    if ctx is not None and current_world().is_main:
        ctx.progress(step, total, preview, **{k: float(v) for k, v in metrics.items()})


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


@dataclass
class FitSpec:
    """How :func:`fit` runs.

    Args:
        total_steps: optimizer steps of the whole run.
        seed: run seed; step n draws from :func:`step_generator` (seed, n).
        lr_at: learning rate of step n (warm-up / decay live here, a pure function of n).
        grad_clip: max global grad norm (0 = off).
        device: where the step generators live.
        checkpointer: None = no checkpoints, no resume.
        preview_every: call ``preview_fn`` every this many steps (0 = never).
        meta: JSON-able run description saved in each checkpoint (a resume must match it).
        max_seconds: stop early (with a checkpoint) once this much wall time has passed in this call;
            None = run all steps. A time-capped run is still a prefix of the deterministic full run.
        param_dtype: under FSDP (``nodes.core.train.sharded``) the compute dtype of the gathered weights
            (``MixedPrecisionPolicy``; gradients reduced and masters kept in fp32); None = as stored.
    """

    total_steps: int
    seed: int = 0
    lr_at: Callable[[int], float] = lambda step: 1e-4
    grad_clip: float = 1.0
    device: str = "cpu"
    checkpointer: Checkpointer | None = None
    preview_every: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    max_seconds: float | None = None
    param_dtype: torch.dtype | None = None


@dataclass
class TrainState:
    """What :func:`fit` returns: the loss of every step run so far (resumed runs include the earlier ones)."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None


def _snapshot(student: nn.Module, target: nn.Module | None, optimizer: torch.optim.Optimizer,
              state: TrainState, spec: FitSpec,
              sharded: ShardedTraining | None) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """The checkpoint's tensors and metadata on rank 0, None on the others (FSDP: a collective of all ranks)."""
    if sharded is not None:
        weights, opt_state = sharded.full_state()
    elif current_world().is_main:
        weights, opt_state = trainable_parameters(student), optimizer.state_dict()
    if not current_world().is_main:
        return None
    tensors = {f"student.{k}": v for k, v in weights.items()}
    if target is not None:
        tensors |= {f"ema.{k}": v for k, v in target.named_parameters() if k in weights}
    opt_tensors, opt_meta = _optimizer_tensors(opt_state)
    meta = {"losses": state.losses, "optimizer": opt_meta, "run": spec.meta}
    return tensors | opt_tensors, meta


def _restore(ckpt: Checkpoint, student: nn.Module, target: nn.Module | None,
             optimizer: torch.optim.Optimizer, spec: FitSpec) -> TrainState:
    if ckpt.meta.get("run") != spec.meta:
        raise ValueError(f"checkpoint at step {ckpt.step} was written by a different run configuration: "
                         f"{ckpt.meta.get('run')} != {spec.meta}")
    params = trainable_parameters(student)
    with torch.no_grad():
        for name, value in ckpt.prefixed("student").items():
            params[name].copy_(value)
        if target is not None:
            tparams = dict(target.named_parameters())
            for name, value in ckpt.prefixed("ema").items():
                tparams[name].copy_(value)
    optimizer.load_state_dict(_optimizer_state(ckpt.tensors, ckpt.meta["optimizer"]))
    return TrainState(step=ckpt.step, losses=list(ckpt.meta["losses"]), resumed_from=ckpt.step)


def _restore_sharded(path: Path, sharded: ShardedTraining, target: nn.Module | None, spec: FitSpec,
                     world: World) -> TrainState:
    """Rank 0 reads the consolidated checkpoint and broadcasts it into every rank's shards (FSDP)."""
    box: list[TrainState | None] = [None]
    weights: dict[str, Tensor] = {}
    optim: dict[str, Any] | None = None
    if world.is_main:
        ckpt = Checkpointer.load(path)
        if ckpt.meta.get("run") != spec.meta:
            raise ValueError(f"checkpoint at step {ckpt.step} was written by a different run configuration: "
                             f"{ckpt.meta.get('run')} != {spec.meta}")
        weights, optim = ckpt.prefixed("student"), _optimizer_state(ckpt.tensors, ckpt.meta["optimizer"])
        if target is not None:
            tparams = dict(target.named_parameters())
            with torch.no_grad():
                for name, value in ckpt.prefixed("ema").items():
                    tparams[name].copy_(value)
        box = [TrainState(step=ckpt.step, losses=list(ckpt.meta["losses"]), resumed_from=ckpt.step)]
    sharded.load_full_state(weights, optim)
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def fit(student: nn.Module, optimizer: torch.optim.Optimizer, step_fn: Callable[[int, torch.Generator], Tensor],
        spec: FitSpec, *, target: nn.Module | None = None, ema: EMA | None = None,
        preview_fn: Callable[[int], Any] | None = None) -> TrainState:
    """Train ``student`` for ``spec.total_steps`` steps, resuming from the latest checkpoint if any.

    Under torchrun (``fewstep run --nproc N``) the run is data-parallel over the N processes (see
    ``nodes.core.train.distributed``): the step's gradients are averaged over ranks, the loss recorded and
    reported is the mean over ranks, rank 0 alone reports progress and writes checkpoints.

    Args:
        student: the module whose trainable parameters the optimizer holds.
        optimizer: built over ``trainable_parameters(student)`` in that order.
        step_fn: ``step_fn(step, generator) -> scalar loss`` with every random draw from ``generator``; in a
            data-parallel run it draws this rank's share (``local_batch_size``) of the batch.
        spec: see :class:`FitSpec`.
        target / ema: the EMA target module and its updater (saved and restored with the run).
        preview_fn: ``preview_fn(step) -> PIL image`` sent with the progress event.
    Returns: the :class:`TrainState` (losses of all steps, incl. those before a resume).
    """
    world = join(spec.device)
    state, ckptr, sharded = TrainState(), spec.checkpointer, None
    if shard_mode(count_trainable(student), world) == "fsdp":
        broadcast_module(student, world)                # every rank shards rank 0's weights
        plain_names = {id(p): name for name, p in student.named_parameters()}
        sharded = ShardedTraining(student, step_fn, optimizer, world, spec.device, spec.param_dtype)
        sharded.rebind(ema, plain_names)
    latest = from_main(ckptr.latest() if ckptr else None, world)
    if latest is not None and sharded is not None:
        state = _restore_sharded(latest, sharded, target, spec, world)
    elif latest is not None:
        state = _restore(Checkpointer.load(latest), student, target, optimizer, spec)
    if target is not None:
        broadcast_module(target, world)                 # the student itself is broadcast by DDP / FSDP
    run_step = sharded.step if sharded else data_parallel(student, step_fn, world, spec.device)
    params = list((sharded.trainable() if sharded else trainable_parameters(student)).values())
    deadline = None if spec.max_seconds is None else time.monotonic() + spec.max_seconds
    threads_before = torch.get_num_threads()            # _one_step sets the count for the machine's load
    try:
        while state.step < spec.total_steps:
            if deadline is not None and any_rank(time.monotonic() > deadline, world):
                break                                   # the final checkpoint below records where
            _one_step(run_step, optimizer, spec, state, params, ema, world)
            if sharded is not None:
                sharded.check_trained(params)
            if ckptr and ckptr.every and state.step % ckptr.every == 0:
                snap = _snapshot(student, target, optimizer, state, spec, sharded)
                if snap is not None:
                    ckptr.save(state.step, *snap)
            _report(state, spec, _preview(state.step, spec, preview_fn, sharded), world)
        if sharded is not None and ckptr and state.step and not _saved_at(ckptr, state.step, world):
            snap = _snapshot(student, target, optimizer, state, spec, sharded)   # collective: all ranks here
            if snap is not None:
                ckptr.save(state.step, *snap)
        _save_final(ckptr, world, student, target, optimizer, state, spec)
        if sharded is not None:
            sharded.finish(ema)                         # the student is a plain module again, trained
        barrier(world)
    except BaseException:
        if sharded is None:                             # FSDP: gathering needs every rank; the last periodic
            _save_final(ckptr, world, student, target, optimizer, state, spec)   # checkpoint stays
        raise
    finally:
        torch.set_num_threads(threads_before)
    return state


def _preview(step: int, spec: FitSpec, preview_fn: Callable[[int], Any] | None,
             sharded: ShardedTraining | None) -> Any:
    """The preview of ``step`` if one is due: rank 0 alone under DDP; every rank under FSDP (the sharded
    student's forward is a collective), with the root unit gathered; rank 0 keeps it."""
    if preview_fn is None or not spec.preview_every or step % spec.preview_every:
        return None
    if sharded is None:
        return preview_fn(step) if current_world().is_main else None
    with sharded.gathered():
        preview = preview_fn(step)
    return preview if current_world().is_main else None


def _report(state: TrainState, spec: FitSpec, preview: Any, world: World) -> None:
    if world.is_main:
        report_training(state.step, spec.total_steps,
                        {"loss": state.losses[-1], "lr": spec.lr_at(state.step - 1), "step": state.step}, preview)


def _save_final(ckptr: Checkpointer | None, world: World, student: nn.Module, target: nn.Module | None,
                optimizer: torch.optim.Optimizer, state: TrainState, spec: FitSpec) -> None:
    """Rank 0 saves step ``state.step`` unless it is on disk already (no collective: also after a failure;
    FSDP runs save their final step before, all ranks together)."""
    if ckptr and state.step and world.is_main and not _saved_at(ckptr, state.step):
        snap = _snapshot(student, target, optimizer, state, spec, None)
        if snap is not None:
            ckptr.save(state.step, *snap)


def _saved_at(ckptr: Checkpointer, step: int, world: World | None = None) -> bool:
    """Whether step ``step`` is on disk; with ``world``, rank 0's answer on every rank."""
    latest = ckptr.latest() if world is None or world.is_main else None
    if world is not None:
        latest = from_main(latest, world)
    return latest is not None and latest.name == f"step_{step:08d}.safetensors"


def _one_step(run_step: Callable, optimizer: torch.optim.Optimizer, spec: FitSpec, state: TrainState,
              params: list[nn.Parameter], ema: EMA | None, world: World) -> None:
    adjust_cpu_threads(spec.device)                     # free cores of the CPU now (see cpu_threads)
    for group in optimizer.param_groups:
        group["lr"] = spec.lr_at(state.step)
    optimizer.zero_grad(set_to_none=True)
    loss = run_step(state.step, step_generator(spec.seed, state.step, spec.device, rank=world.rank))
    reported = mean_over_ranks(loss, world)             # every rank sees a non-finite loss of any rank
    if not torch.isfinite(reported):
        raise FloatingPointError(f"training loss is {reported.item()} at step {state.step}")
    loss.backward()                                     # data-parallel: DDP averages the gradients here
    if spec.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
    optimizer.step()
    if ema is not None:
        ema.update()
    state.losses.append(float(reported))
    state.step += 1


# ---------------------------------------------------------------------------------------------
# LoRA (peft)
# ---------------------------------------------------------------------------------------------


def add_lora(module: nn.Module, rank: int, target_modules: Iterable[str], alpha: float | None = None,
             extra_trainable: Iterable[str] = ()) -> nn.Module:
    """Inject LoRA adapters (peft) into ``module`` in place; only adapter weights stay trainable.

    Args:
        rank: LoRA rank r; alpha defaults to r (scale 1).
        target_modules: module-name suffixes (e.g. ``to_q``, ``to_k``, ``conv1``), as peft matches them.
        extra_trainable: substrings of parameter names trained in full beside the adapters (e.g. a new
            ``cond_proj`` input layer).
    """
    extra = tuple(extra_trainable)
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(target_modules), init_lora_weights=True)
    module = inject_adapter_in_model(config, module)
    for name, p in module.named_parameters():
        p.requires_grad_("lora_" in name or any(key in name for key in extra))
    return module


def merged_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """The plain (adapter-free) state dict: LoRA deltas merged into the base weights, peft names removed."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, BaseTunerLayer) and not sub.merged:
                sub.merge()
        out = {}
        for key, value in module.state_dict().items():
            if "lora_" in key:
                continue
            out[key.replace(".base_layer.", ".")] = value.detach().clone()
        for sub in module.modules():
            if isinstance(sub, BaseTunerLayer) and sub.merged:
                sub.unmerge()
    return out


# ---------------------------------------------------------------------------------------------
# Configs: fingerprints and learning-rate schedules
# ---------------------------------------------------------------------------------------------


def config_fingerprint(fields: dict[str, object]) -> str:
    """8 hex digits naming a configuration (``dataclasses.asdict`` of it): part of the run folder, so a
    changed setting starts a new run and a resume needs the same one."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


def warmup_lr(lr: float, warmup: int = 0) -> Callable[[int], float]:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then constant (the LCM scripts' default; 0 = constant)."""
    def lr_at(step: int) -> float:
        return lr * min(1.0, (step + 1) / warmup) if warmup else lr
    return lr_at
