"""Fully sharded data parallel (FSDP2, ``torch.distributed.fsdp.fully_shard``) for students too big for DDP.

Under DDP every process holds the whole student, its gradients and its AdamW state: 4 + 4 + 8 = 16 bytes per
fp32 parameter (plus DDP's 4-byte gradient buckets). SDXL's UNet (2.57 B parameters) needs 41-51 GB for that
alone, before the teacher, the EMA copy and the activations - more than an 80 GB GPU has left; SD1.5's
(0.86 B) needs 14-17 GB and fits. :func:`shard_mode` therefore picks FSDP above :data:`FSDP_MIN_PARAMS`
(1.5 B trainable parameters: 24 GB of states, under a third of an H100) and DDP below; ``$FEWSTEP_SHARD``
(``fewstep run --shard``) forces either. FSDP holds 16 / N bytes per parameter and process (N processes).

How the student is sharded (:class:`ShardedTraining`):

* **In place, then undone.** ``fully_shard`` changes a module's class and registers hooks and sharded
  ``DTensor`` parameters on it; the step function and the node keep references to the student's modules, so
  those very modules are sharded and trained. At the end the consolidated weights are gathered on every rank
  and FSDP is taken off again (:func:`_strip_fsdp`: class, hooks, state; each parameter a plain
  ``nn.Parameter`` of its full value): the node hands on the modules it built, plain, trained.
* **Units.** Each transformer / resnet block (class name containing ``TransformerBlock`` or ``ResnetBlock``,
  outermost ones) is one FSDP unit; a model without such blocks gets one unit per child of the student that
  holds parameters. The root unit is the training step itself (a module whose forward is the step function),
  so parameters outside the blocks (conv_in, time embedding, ...) are gathered for the whole step, whichever
  method of the student the step calls.
* **Mixed precision.** ``param_dtype`` (the trainer's bf16 / fp16) becomes ``MixedPrecisionPolicy(param_dtype,
  reduce_dtype=float32)``: the gathered weights are cast for compute, gradients are reduced in fp32 and the
  sharded master weights and AdamW state stay fp32.
* **Optimizer after sharding.** The optimizer the node built holds the original parameters; before its first
  step it is re-pointed at the sharded ones (same param groups, same hyperparameters).
* **Checkpoints.** Rank 0 writes consolidated full state dicts (``get_model_state_dict`` /
  ``get_optimizer_state_dict`` with ``StateDictOptions(full_state_dict=True, cpu_offload=True)``) in the same
  format as DDP's, and a resume loads them with ``broadcast_from_rank0=True``: a run resumes on any number of
  processes, under DDP or FSDP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from fewstep.nodes.core.train.distributed import StepFn, World, _StepModule

if TYPE_CHECKING:
    from fewstep.nodes.core.train.loop import EMA

SHARD_ENV = "FEWSTEP_SHARD"
SHARD_MODES = ("auto", "ddp", "fsdp")
FSDP_MIN_PARAMS = 1_500_000_000
BLOCK_MARKERS = ("TransformerBlock", "ResnetBlock")


def shard_mode(trainable_params: int, world: World) -> str:
    """``"ddp"`` or ``"fsdp"`` for a student with ``trainable_params`` trainable parameters (``$FEWSTEP_SHARD``:
    auto (default) = FSDP from :data:`FSDP_MIN_PARAMS` on, DDP below; 1 process: ``"ddp"`` (no group))."""
    wanted = os.environ.get(SHARD_ENV, "") or "auto"
    if wanted not in SHARD_MODES:
        raise ValueError(f"{SHARD_ENV}={wanted!r}: choose one of {', '.join(SHARD_MODES)} (fewstep run --shard)")
    if not world.distributed:
        return "ddp"
    if wanted == "auto":
        return "fsdp" if trainable_params >= FSDP_MIN_PARAMS else "ddp"
    return wanted


def _units(root: nn.Module) -> list[nn.Module]:
    """The outermost transformer / resnet blocks below ``root``; else its children that hold parameters."""
    found: list[nn.Module] = []
    inside: set[int] = set()
    for module in root.modules():
        if id(module) in inside:
            continue
        if module is not root and any(mark in type(module).__name__ for mark in BLOCK_MARKERS):
            found.append(module)
            inside.update(id(m) for m in module.modules())
    if found:
        return found
    return [child for child in root.children() if any(True for _ in child.parameters())]


class ShardedTraining:
    """The student, sharded in place over the process group until :meth:`finish` (see the module docstring).

    Args:
        student: the module the optimizer holds.
        step_fn: the training step; it may call ``student`` and its modules in any way, but every rank must
            run the same units the same number of times (each run of a unit all-gathers its weights).
        optimizer: built over the student's trainable parameters; no step taken yet.
        device: this process's device; param_dtype: compute dtype of the gathered weights (None = as stored).
    """

    def __init__(self, student: nn.Module, step_fn: StepFn, optimizer: torch.optim.Optimizer, world: World,
                 device: str, param_dtype: torch.dtype | None = None) -> None:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if optimizer.state:
            raise ValueError("the optimizer has state already: FSDP needs it before its first step")
        self.student, self.optimizer, self.world, self.device = student, optimizer, world, torch.device(device)
        self.names = {id(p): name for name, p in student.named_parameters()}
        self.opt_names = [self.names[id(p)] for group in optimizer.param_groups for p in group["params"]]
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
        for unit in _units(student):
            fully_shard(unit, mp_policy=mp)
        self.step = _StepModule(student, step_fn)
        fully_shard(self.step, mp_policy=mp)
        self._point_optimizer(dict(student.named_parameters()))

    def rebind(self, ema: EMA | None, before: dict[int, str]) -> None:
        """Point ``ema``'s online parameters (the student's before sharding or unsharding: ``before`` maps their
        ids to names) at the student's parameters now."""
        if ema is None:
            return
        now = dict(self.student.named_parameters())
        ema.online = {key: now[before[id(p)]] for key, p in ema.online.items()}

    def _point_optimizer(self, params: dict[str, nn.Parameter]) -> None:
        it = iter(self.opt_names)
        for group in self.optimizer.param_groups:
            group["params"] = [params[next(it)] for _ in group["params"]]

    def check_trained(self, params: list[nn.Parameter]) -> None:
        """ValueError when a step left every sharded parameter without a gradient (a step that does not use the
        module passed to ``fit``: nothing would be trained)."""
        if not any(p.grad is not None for p in params):
            raise ValueError("FSDP: the training step gave no gradient to the sharded student - does the step use "
                             "the module passed to fit? Train with FEWSTEP_SHARD=ddp (fewstep run --shard ddp)")

    def trainable(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.student.named_parameters() if p.requires_grad}

    @contextmanager
    def gathered(self) -> Iterator[None]:
        """The root unit's parameters gathered (a preview outside the step); every rank must enter."""
        self.step.unshard()
        try:
            yield
        finally:
            self.step.reshard()

    def full_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Consolidated trainable weights and optimizer state on rank 0 ({} elsewhere); a collective.

        The optimizer state comes keyed by parameter index, as ``optimizer.state_dict()`` of a DDP run."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(self.student, options=opts)
        optim = get_optimizer_state_dict(self.student, self.optimizer, options=opts)
        if not self.world.is_main:
            return {}, {}
        trainable = self.trainable()
        index = {name: i for i, name in enumerate(self.opt_names)}
        groups = [{**g, "params": [index[n] for n in g["params"]]} for g in optim["param_groups"]]
        state = {index[name]: value for name, value in optim["state"].items()}
        return ({k: v for k, v in weights.items() if k in trainable}, {"state": state, "param_groups": groups})

    def load_full_state(self, weights: dict[str, Tensor], optim: dict[str, Any] | None) -> None:
        """Rank 0's consolidated weights and optimizer state (index-keyed) into the shards of every rank (a
        collective: every rank calls it; the arguments count on rank 0 only)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
        set_model_state_dict(self.student, weights if self.world.is_main else {}, options=opts)
        named: dict[str, Any] = {}
        if self.world.is_main and optim is not None:
            groups = [{**g, "params": [self.opt_names[i] for i in g["params"]]} for g in optim["param_groups"]]
            named = {"state": {self.opt_names[int(i)]: v for i, v in optim["state"].items()}, "param_groups": groups}
        set_optimizer_state_dict(self.student, self.optimizer, named, options=opts)

    def finish(self, ema: EMA | None = None) -> None:
        """Make the student a plain module again, holding the consolidated trained weights (every rank).

        Every module keeps its identity (the references the node holds stay valid); FSDP's class, hooks and
        state come off and each sharded parameter becomes a plain ``nn.Parameter`` of the full value. The
        optimizer is pointed at those with its state dropped (the checkpoint holds it)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.student, options=StateDictOptions(full_state_dict=True))
        sharded_names = {id(p): name for name, p in self.student.named_parameters()}
        for module in self.step.modules():
            _strip_fsdp(module)
        made: dict[int, nn.Parameter] = {}
        for name, owner, leaf, param in _parameter_slots(self.student):
            if id(param) not in made:
                value = full[sharded_names[id(param)]] if id(param) in sharded_names else full[name]
                made[id(param)] = nn.Parameter(value.detach().clone(), requires_grad=param.requires_grad)
            owner._parameters[leaf] = made[id(param)]
        self.optimizer.state.clear()
        self._point_optimizer(dict(self.student.named_parameters()))
        self.rebind(ema, sharded_names)
        dist.barrier()


def _parameter_slots(root: nn.Module) -> list[tuple[str, nn.Module, str, nn.Parameter]]:
    """(name, owning module, attribute, parameter) of every parameter slot, tied ones included."""
    slots = []
    for prefix, module in root.named_modules(remove_duplicate=False):
        for leaf, param in module._parameters.items():
            if param is not None:
                slots.append((f"{prefix}.{leaf}" if prefix else leaf, module, leaf, param))
    return slots


def _strip_fsdp(module: nn.Module) -> None:
    """Undo ``fully_shard`` on one module: its forward / state-dict hooks, its FSDP class and its registered
    state (torch 2.14's FSDP2 keeps these on the module; no public API removes them)."""
    from torch.distributed import _composable_state
    from torch.distributed._composable.contract import REGISTRY_KEY, STATE_KEY
    from torch.distributed.fsdp import FSDPModule, fully_shard

    for flag in ("_is_fsdp_managed_module", "_fsdp_use_orig_params"):     # set on every managed module
        module.__dict__.pop(flag, None)
    state = fully_shard.state(module)
    for key in (STATE_KEY, REGISTRY_KEY):           # fully_shard's entries: its state / its name
        table = module.__dict__.get(key)
        if table is not None:
            for entry in [k for k, v in table.items() if k == "fully_shard" or (state is not None and v is state)]:
                del table[entry]
            if not table:
                del module.__dict__[key]
    if state is None:
        return
    state._pre_forward_hook_handle.remove()
    state._post_forward_hook_handle.remove()
    for group in state._fsdp_param_groups:
        for handles in (group._module_to_pre_save_state_dict_hook_handle,
                        group._module_to_pre_load_state_dict_hook_handle):
            for handle in handles.values():
                handle.remove()
        for fsdp_param in group.fsdp_params:
            fsdp_param._post_load_hook_handle.remove()
    _composable_state._module_state_mapping.pop(module, None)
    module.__class__ = next(base for base in type(module).__bases__ if base is not FSDPModule)


def full_value(tensor: Tensor) -> Tensor:
    """A sharded DTensor's whole value (an all-gather, every rank); a plain tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

