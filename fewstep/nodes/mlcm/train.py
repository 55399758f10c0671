"""Distillation runs: config presets, student construction (full / LoRA / γ-input), the training loop glue.

One function, :func:`distill`, runs every method of this pack and of ``fewstep/nodes/slam``: plain LCM (MLCD with
one segment), MLCM stage 1, MLCM stage 2 (progressive) and SLAM. It is network-agnostic: the teacher and
student are :class:`~nodes.mlcm.vp.VPNet` views, prompts come from a :class:`PromptPool`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from fewstep.nodes.core.trainer import (
    EMA,
    Checkpointer,
    FitSpec,
    TrainState,
    add_lora,
    fit,
    trainable_parameters,
)
from fewstep.nodes.mlcm.losses import DistillBatch, MLCDLoss, ProgressiveLCDLoss
from fewstep.nodes.mlcm.vp import VPNet

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
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]


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


def make_loss(cfg: DistillConfig, perceptual: Callable[[Tensor], Tensor] | None = None,
              reward: Callable[[Tensor, DistillBatch], Tensor] | None = None) -> Callable[..., Tensor]:
    """The loss object of a configuration; ``perceptual`` / ``reward`` are stage 1's optional Φ and scorer,
    used with ``cfg.perceptual_weight`` / ``cfg.reward_weight`` (a weight > 0 without its callable is an error)."""
    if cfg.perceptual_weight > 0 and perceptual is None:
        raise ValueError("DistillConfig.perceptual_weight > 0 needs a perceptual feature map (make_loss)")
    if cfg.reward_weight > 0 and reward is None:
        raise ValueError("DistillConfig.reward_weight > 0 needs a reward function (make_loss)")
    if cfg.method in ("lcm", "mlcm"):
        return MLCDLoss(num_segments=cfg.num_segments if cfg.method == "mlcm" else 1, skip=cfg.skip,
                        substeps=cfg.substeps, guidance=cfg.guidance, huber_c=cfg.huber_c,
                        state_source=cfg.state_source, state_step=cfg.state_step,
                        perceptual=perceptual, perceptual_weight=cfg.perceptual_weight,
                        reward=reward, reward_weight=cfg.reward_weight, reward_margin=cfg.reward_margin)
    if cfg.method == "mlcm_stage2":
        return ProgressiveLCDLoss(num_segments=cfg.num_segments, student_steps=cfg.student_steps,
                                  teacher_substeps=cfg.teacher_substeps, guidance=cfg.guidance, huber_c=cfg.huber_c)
    from fewstep.nodes.slam.loss import SLAMLoss

    return SLAMLoss(skip=cfg.skip, guidance=cfg.guidance, huber_c=cfg.huber_c, embedding_dim=cfg.gamma_dim,
                    state_source=cfg.state_source, state_step=cfg.state_step, gamma_one=cfg.gamma_one)


@dataclass
class PromptPool:
    """Encoded prompts to draw batches from (encode once, sample per step from the step generator).

    Args:
        cond: [N, ...] conditioning per prompt.  uncond: [1, ...] the empty prompt's.
        prompts: the N prompt strings.  latents: [N, C, h, w] clean latents for ``state_source="real"``.
        latent_shape: the per-sample latent shape (C, h, w).
    """

    cond: Tensor
    uncond: Tensor
    prompts: list[str]
    latent_shape: tuple[int, ...]
    latents: Tensor | None = None

    def batch(self, size: int, gen: torch.Generator) -> DistillBatch:
        """A batch of ``size`` prompts drawn with replacement from ``gen``."""
        idx = torch.randint(0, self.cond.shape[0], (size,), generator=gen, device=gen.device).to(self.cond.device)
        latents = None if self.latents is None else self.latents[idx]
        return DistillBatch(cond=self.cond[idx], uncond=self.uncond, shape=(size, *self.latent_shape),
                            generator=gen, latents=latents, prompts=[self.prompts[i] for i in idx.tolist()])


@dataclass
class Student:
    """The trainable student: its VPNet view, the EMA target (if any) and the optimizer."""

    view: VPNet
    target: VPNet | None
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    extras: dict[str, Any] = field(default_factory=dict)


def build_student(teacher: VPNet, cfg: DistillConfig, net: nn.Module | None = None,
                  lora_targets: tuple[str, ...] = (), extra_trainable: tuple[str, ...] = ()) -> Student:
    """Copy the teacher's network (or take ``net``), add LoRA if asked, an EMA copy if asked, AdamW.

    Args:
        net: the student network to train (default: a deep copy of the teacher's); SLAM passes one with a
            γ input (see ``nodes.slam.student``).
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


def lr_schedule(cfg: DistillConfig) -> Callable[[int], float]:
    """Linear warm-up to ``cfg.lr`` over ``cfg.warmup`` steps, then constant (the LCM scripts' default)."""
    def lr_at(step: int) -> float:
        return cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
    return lr_at


def distill(teacher: VPNet, student: Student, pool: PromptPool, cfg: DistillConfig, *,
            checkpointer: Checkpointer | None = None, preview_fn: Callable[[int], Any] | None = None,
            preview_every: int = 0, device: str = "cpu",
            autocast: torch.dtype | None = None, max_seconds: float | None = None,
            meta: dict[str, Any] | None = None,
            terms: tuple[Callable[..., Tensor] | None, Callable[..., Tensor] | None] = (None, None)) -> TrainState:
    """Run ``cfg.steps`` optimizer steps of ``cfg.method`` (resuming from ``checkpointer``'s latest).

    Every random draw of step n comes from ``step_generator(cfg.seed, n)``, so the run is deterministic
    and a resumed run repeats the uninterrupted one. ``autocast`` (e.g. torch.bfloat16 on a GPU) runs the
    networks in mixed precision; the loss and the weights stay float32. ``terms`` = (Φ, reward) for the
    optional stage-1 terms (see :func:`make_loss`).
    """
    loss_fn = make_loss(cfg, *terms)
    teacher.net.eval().requires_grad_(False)

    def step_fn(step: int, gen: torch.Generator) -> Tensor:
        batch = pool.batch(cfg.batch_size, gen)
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast, enabled=autocast is not None):
            return loss_fn(student.view, batch, teacher=teacher, target=student.target).mean()

    spec = FitSpec(total_steps=cfg.steps, seed=cfg.seed, lr_at=lr_schedule(cfg), grad_clip=cfg.grad_clip,
                   device=device, checkpointer=checkpointer, preview_every=preview_every,
                   meta={"config": asdict(cfg), **(meta or {})}, max_seconds=max_seconds)
    return fit(student.view.net, student.optimizer, step_fn, spec,
               target=None if student.target is None else student.target.net, ema=student.ema,
               preview_fn=preview_fn)


def preset(name: str, **changes: Any) -> DistillConfig:
    """A named preset with some fields changed (clear error for unknown names)."""
    if name not in PRESETS:
        raise ValueError(f"unknown distillation preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **changes)
