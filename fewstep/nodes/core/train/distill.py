"""The consistency-distillation run shared by the LCM-family packs: config, presets, student, loop glue.

:func:`distill` runs plain LCM (MLCD with one segment), MLCM stage 1 and 2 (``nodes.mlcm``) and SLAM
(``nodes.slam``): the method's pack builds the loss object from the :class:`DistillConfig`, this module
builds the student (full / LoRA / with a γ input) and runs ``nodes.core.train.loop.fit``. It is
network-agnostic: teacher and student are :class:`~fewstep.nodes.core.train.vp.VPNet` views, prompts come
from a :class:`~fewstep.nodes.core.train.prompts.PromptPool`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

import torch
from torch import Tensor, nn

from fewstep.nodes.core.train.batches import DistillBatch
from fewstep.nodes.core.train.distributed import local_batch_size
from fewstep.nodes.core.train.loop import (
    EMA,
    Checkpointer,
    FitSpec,
    TrainState,
    add_lora,
    config_fingerprint,
    fit,
    trainable_parameters,
    warmup_lr,
)
from fewstep.nodes.core.train.prompts import PromptPool
from fewstep.nodes.core.train.vp import VPNet


class DistillLoss(Protocol):
    """A distillation loss object (style principle 4): per-sample loss [B] of ``student`` on ``batch``."""

    def __call__(self, student: VPNet, batch: DistillBatch, *, teacher: VPNet, target: VPNet | None = None
                 ) -> Tensor: ...


METHODS = ("lcm", "mlcm", "mlcm_stage2", "slam")


@dataclass(frozen=True)
class DistillConfig:
    """Hyperparameters of one distillation run (papers' values where they transfer; see PRESETS).

    Args:
        method: lcm | mlcm | mlcm_stage2 | slam.
        steps / batch_size / lr / grad_clip / seed: the optimisation (AdamW, weight decay 0, constant lr
            after ``warmup`` linear steps).
        num_segments: MLCM's M (LCM: 1).  skip: teacher skip in timesteps.  substeps: teacher sub-steps.
        guidance: teacher CFG scale s (= LCM w + 1).  huber_c: pseudo-Huber c.
        target: "online" (stop-gradient student, MLCM's default) or "ema".  ema_decay: θ⁻ decay.
        state_source: "teacher" (data-free trajectories) or "real" (noised dataset latents).
        state_step: largest timestep stride of the data-free trajectories (T/M = 125 for M = 8).
        student_steps / teacher_substeps: stage 2's q and p.
        lora_rank: 0 = full fine-tune, else LoRA rank r via peft.
        gamma_dim: SLAM's γ-embedding size (the UNet's ``time_cond_proj_dim``).
        gamma_one: SLAM only: share of samples trained at exactly γ = 1 (ours; 0 = the paper, see SLAMLoss).
        perceptual_weight: weight of TLCM's perceptual term (EffNet features of decoded images; lcm/mlcm
            only; 0 = off).  reward_weight / reward_margin: weight and margin of the preference hinge
            weight · relu(margin - reward) with the zoo scorer's cosine (lcm/mlcm only; 0 = off; margin 1
            = always active since the cosine is <= 1).
    """

    method: str = "mlcm"
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    warmup: int = 0
    grad_clip: float = 1.0
    seed: int = 0
    num_segments: int = 8
    skip: int = 20
    substeps: int = 1
    guidance: float = 5.0
    huber_c: float = 0.001
    target: str = "online"
    ema_decay: float = 0.95
    state_source: str = "teacher"
    state_step: int = 125
    student_steps: int = 4
    teacher_substeps: int = 3
    lora_rank: int = 0
    gamma_dim: int = 256
    gamma_one: float = 0.0
    perceptual_weight: float = 0.0
    reward_weight: float = 0.0
    reward_margin: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"DistillConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.target not in ("online", "ema"):
            raise ValueError(f"DistillConfig.target must be 'online' or 'ema', got {self.target!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"DistillConfig: steps and batch_size must be >= 1 (got {self.steps}, {self.batch_size})")
        if self.perceptual_weight < 0 or self.reward_weight < 0:
            raise ValueError("DistillConfig: perceptual_weight and reward_weight must be >= 0 "
                             f"(got {self.perceptual_weight}, {self.reward_weight})")
        if not 0.0 <= self.gamma_one <= 1.0 or (self.gamma_one > 0 and self.method != "slam"):
            raise ValueError(f"DistillConfig.gamma_one must be in [0, 1] and is SLAM's only (got {self.gamma_one} "
                             f"for method {self.method!r})")
        if self.uses_terms and self.method not in ("lcm", "mlcm"):
            raise ValueError(f"DistillConfig: the perceptual / preference terms belong to the stage-1 loss "
                             f"(lcm, mlcm), not to method {self.method!r}")

    @property
    def uses_terms(self) -> bool:
        """Whether the optional perceptual or preference term is on."""
        return self.perceptual_weight > 0 or self.reward_weight > 0

    def fingerprint(self) -> str:
        """8 hex digits naming this configuration (the run folder; a resume needs the same one)."""
        fields = asdict(self)
        if not self.uses_terms:  # runs without the optional terms keep the fingerprint they had before them
            for key in ("perceptual_weight", "reward_weight", "reward_margin"):
                fields.pop(key)
        if self.gamma_one == 0:   # likewise for runs without the γ = 1 share
            fields.pop("gamma_one")
        return config_fingerprint(fields)


# The papers' values, scaled to the 7.6 M-parameter built-in teacher: MLCM/TLCM v6 (M = 8, skip 20,
# lr 1e-4 stage 1 / 1e-5 stage 2, q = 4, p = 3, online target), SLAM (skip 20, EMA 0.95, lr 8e-6 for SD1.5;
# our teacher is 100x smaller and trained from scratch, so 1e-4 like the others), LCM = one segment.
# CFG 5 is the built-in teacher's own sampling scale (TLCM / SLAM use w = 8, i.e. s = 9, on SD).
PRESETS: dict[str, DistillConfig] = {
    "lcm":         DistillConfig(method="lcm", num_segments=1, target="ema", ema_decay=0.95),
    "mlcm":        DistillConfig(method="mlcm", num_segments=8, target="online"),
    "mlcm_stage2": DistillConfig(method="mlcm_stage2", num_segments=8, lr=1e-5, steps=200, target="online"),
    "slam":        DistillConfig(method="slam", target="ema", ema_decay=0.95),
}


@dataclass
class Student:
    """The trainable student: its VPNet view, the EMA target (if any) and the optimizer."""

    view: VPNet
    target: VPNet | None
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    extras: dict[str, object] = field(default_factory=dict)


def build_student(teacher: VPNet, cfg: DistillConfig, net: nn.Module | None = None,
                  lora_targets: tuple[str, ...] = (), extra_trainable: tuple[str, ...] = ()) -> Student:
    """Copy the teacher's network (or take ``net``), add LoRA if asked, an EMA copy if asked, AdamW.

    Args:
        net: the student network to train (default: a deep copy of the teacher's); SLAM passes one with a
            γ input (see ``nodes.core.train.gamma``).
        lora_targets: module-name suffixes for LoRA (ignored when ``cfg.lora_rank == 0``).
        extra_trainable: parameter-name substrings trained in full beside LoRA (SLAM's ``cond_proj``).
    """
    net = copy.deepcopy(teacher.net) if net is None else net
    net.train().requires_grad_(True)
    has_lora = any("lora_" in name for name, _ in net.named_parameters())
    if has_lora and cfg.lora_rank == 0:       # continue training existing adapters (MLCM stage 2)
        for name, p in net.named_parameters():
            p.requires_grad_("lora_" in name or any(key in name for key in extra_trainable))
    elif cfg.lora_rank > 0:
        if not lora_targets:
            raise ValueError("LoRA needs target module names (lora_targets)")
        net = add_lora(net, cfg.lora_rank, lora_targets, extra_trainable=extra_trainable)
    view = VPNet(net, teacher.schedule, teacher.prediction_type)
    target = ema = None
    if cfg.target == "ema":
        target_net = copy.deepcopy(net).eval()
        target = VPNet(target_net, teacher.schedule, teacher.prediction_type)
        ema = EMA(net, target_net, cfg.ema_decay)
    opt = torch.optim.AdamW(list(trainable_parameters(net).values()), lr=cfg.lr, weight_decay=0.0)
    return Student(view, target, ema, opt)


def distill(teacher: VPNet, student: Student, pool: PromptPool, cfg: DistillConfig, loss_fn: DistillLoss, *,
            checkpointer: Checkpointer | None = None, preview_fn: Callable[[int], object] | None = None,
            preview_every: int = 0, device: str = "cpu",
            autocast: torch.dtype | None = None, max_seconds: float | None = None,
            meta: dict[str, object] | None = None) -> TrainState:
    """Run ``cfg.steps`` optimizer steps of ``loss_fn`` (resuming from ``checkpointer``'s latest).

    ``loss_fn`` is the method's loss object, built by its pack from ``cfg`` (``nodes.mlcm.train.make_loss``
    for LCM / MLCM, ``nodes.slam.loss.make_loss`` for SLAM). Every random draw of step n comes from
    ``step_generator(cfg.seed, n)``, so the run is deterministic and a resumed run repeats the uninterrupted
    one. ``autocast`` (e.g. torch.bfloat16 on a GPU) runs the networks in mixed precision; the loss and the
    weights stay float32.
    """
    teacher.net.eval().requires_grad_(False)

    def step_fn(step: int, gen: torch.Generator) -> Tensor:
        batch = pool.batch(local_batch_size(cfg.batch_size), gen)    # this rank's share of the global batch
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast, enabled=autocast is not None):
            return loss_fn(student.view, batch, teacher=teacher, target=student.target).mean()

    spec = FitSpec(total_steps=cfg.steps, seed=cfg.seed, lr_at=warmup_lr(cfg.lr, cfg.warmup), grad_clip=cfg.grad_clip,
                   device=device, checkpointer=checkpointer, preview_every=preview_every,
                   meta={"config": asdict(cfg), **(meta or {})}, max_seconds=max_seconds,
                   param_dtype=autocast)                # FSDP: the gathered weights in the autocast dtype
    return fit(student.view.net, student.optimizer, step_fn, spec,
               target=None if student.target is None else student.target.net, ema=student.ema,
               preview_fn=preview_fn)


def preset(name: str, **changes: object) -> DistillConfig:
    """A named preset with some fields changed (clear error for unknown names)."""
    if name not in PRESETS:
        raise ValueError(f"unknown distillation preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **changes)
