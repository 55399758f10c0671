"""TDM runs on the shared trainer: configuration, the (student, fake score) pair, its optimizer, the loop glue.

:func:`distill_tdm` is network-agnostic: teacher and networks are :class:`~nodes.core.train.vp.VPNet` views (the
built-in UNet through ``UNetAdapter``, the Gaussian-mixture toy) with :class:`TDMConfig`, or
:class:`~nodes.core.train.flow_param.FlowNet` views (the built-in video DiT, a flow toy) with
``nodes.tdm.video.TDMVideoConfig`` (whose loss is ``nodes.tdm.flow.TDMFlowLoss``); prompts come from a ``PromptPool``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from fewstep.nodes.core.train.distributed import local_batch_size
from fewstep.nodes.core.train.flow_param import FlowNet
from fewstep.nodes.core.train.loop import (
    EMA,
    Checkpointer,
    FitSpec,
    TrainState,
    add_lora,
    config_fingerprint,
    fit,
    step_generator,
    trainable_parameters,
    warmup_lr,
)
from fewstep.nodes.core.train.prompts import PromptPool
from fewstep.nodes.core.train.vp import VPNet
from fewstep.nodes.tdm.loss import STEPS_COND_DIM, TDMLoss, steps_condition

if TYPE_CHECKING:
    from fewstep.nodes.tdm.video import TDMVideoConfig

View = VPNet | FlowNet          # the trainer's view of a network: VP (ε / v / x0) or rectified flow (velocity)


@dataclass(frozen=True)
class TDMConfig:
    """Hyperparameters of one TDM run (the demo's values where they transfer; see PRESETS).

    Args:
        steps / batch_size / seed / warmup: the optimisation (one generator + one fake-score update per step).
        lr: the fake score's learning rate; the student's is ``lr · generator_lr_ratio`` (demo: lr/5).
        grad_clip: max grad norm, applied to each network separately (demo: 1).
        student_steps: K of the student (unify: the largest K; K ~ U{1..K} per step).
        unify: TDM-unify, the sampling-steps-aware variant (K is a one-hot condition of student and fake).
        total_steps / guidance / huber_c / separate / snr_cap: see :class:`~nodes.tdm.loss.TDMLoss`.
        lora_rank: student LoRA rank (0 = full copy).  fake_lora_rank: the same for the fake score.
        ema_decay: EMA of the student's weights (0 = off; the demo's ``--use_ema`` is off by default).
    """

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    generator_lr_ratio: float = 0.2
    warmup: int = 0
    grad_clip: float = 1.0
    seed: int = 0
    student_steps: int = 4
    unify: bool = False
    total_steps: int = 900
    guidance: float = 5.0
    huber_c: float = 1e-3
    separate: bool = True
    snr_cap: float = 5.0
    lora_rank: int = 0
    fake_lora_rank: int = 0
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        checks = [(self.steps >= 1, "steps >= 1"), (self.batch_size >= 1, "batch_size >= 1"),
                  (1 <= self.student_steps <= STEPS_COND_DIM, f"student_steps in 1..{STEPS_COND_DIM}"),
                  (self.total_steps // max(self.student_steps, 1) > self.loss().tau_margin + 1,
                   "total_steps / student_steps > 11 (each step needs its own interval)"),
                  (self.lr >= 0 and self.generator_lr_ratio > 0, "lr >= 0 and generator_lr_ratio > 0"),
                  (0.0 <= self.ema_decay < 1.0, "ema_decay in [0, 1)"),
                  (self.lora_rank >= 0 and self.fake_lora_rank >= 0, "LoRA ranks >= 0")]
        bad = [what for ok, what in checks if not ok]
        if bad:
            raise ValueError(f"TDMConfig: need {', '.join(bad)} (got {self})")

    def loss(self) -> TDMLoss:
        return TDMLoss(guidance=self.guidance, huber_c=self.huber_c, total_steps=self.total_steps,
                       separate=self.separate, snr_cap=self.snr_cap)

    def fingerprint(self) -> str:
        """8 hex digits naming this configuration (the run folder; a resume needs the same one)."""
        return config_fingerprint(asdict(self))


# The demo's values (methods.md §2: lr 2e-5 with the student at lr/5, grad norm 1, CFG 4.5, T' = 900, Huber,
# separate intervals), scaled to the 7.6 M-parameter built-in teacher: our teacher is ~80x smaller than
# PixArt-α and trained from scratch, so lr 1e-4 (as the MLCM pack); CFG 5 is the teacher's own scale.
PRESETS: dict[str, TDMConfig] = {
    "tdm":       TDMConfig(),
    "tdm_unify": TDMConfig(unify=True),
    "dmd":       TDMConfig(student_steps=1),          # K = 1: pure distribution matching (the paper's ablation)
}


def preset(name: str, **changes: Any) -> TDMConfig:
    """A named preset with some fields changed (clear error for unknown names)."""
    if name not in PRESETS:
        raise ValueError(f"unknown TDM preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **changes)


class PairAdamW(torch.optim.AdamW):
    """AdamW whose parameter groups carry ``lr_scale`` and ``max_norm``: per-network clipping and lr ratio.

    The trainer sets one lr for every group; the student's group runs at ``lr · lr_scale`` (TDM: 1/5) and
    each group's gradients are clipped to its own norm first (the demo clips the student and the fake score
    separately). Both keys live in the param groups, so they are checkpointed with the optimizer.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        base = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            grads = [p for p in group["params"] if p.grad is not None]
            if group.get("max_norm", 0) > 0 and grads:
                torch.nn.utils.clip_grad_norm_(grads, group["max_norm"])
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, base, strict=True):
                group["lr"] = lr


class TDMPair(nn.Module):
    """The trained networks: ``student`` (the few-step generator) and ``fake`` (the fake score)."""

    def __init__(self, student: nn.Module, fake: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.fake = fake


class _StudentOnly(nn.Module):
    """A view naming the student's parameters ``student.*`` (what the EMA tracks, matching the pair's names)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student


@dataclass
class TDMRun:
    """Everything a run trains: the pair, its VPNet (or FlowNet) views, the optimizer and the optional EMA."""

    pair: TDMPair
    student: View
    fake: View
    optimizer: PairAdamW
    ema_target: nn.Module | None = None
    ema: EMA | None = None


def _trainable(net: nn.Module, rank: int, lora_targets: tuple[str, ...], extra: tuple[str, ...]) -> nn.Module:
    net.train().requires_grad_(True)
    if rank > 0:
        if not lora_targets:
            raise ValueError("LoRA needs target module names (lora_targets)")
        net = add_lora(net, rank, lora_targets, extra_trainable=extra)
    return net


def view_like(teacher: View, net: nn.Module, prediction_type: str | None = None) -> View:
    """``net`` seen the way ``teacher`` is: a FlowNet for a flow teacher, else a VPNet on the teacher's schedule."""
    if isinstance(teacher, FlowNet):
        return FlowNet(net)
    return VPNet(net, teacher.schedule, prediction_type or teacher.prediction_type)


def build_run(teacher: View, cfg: TDMConfig | TDMVideoConfig, student_net: nn.Module | None = None,
              fake_net: nn.Module | None = None, lora_targets: tuple[str, ...] = (),
              extra_trainable: tuple[str, ...] = (), prediction_type: str | None = None) -> TDMRun:
    """Copy the teacher twice (student and fake score; or take the given networks), LoRA if asked, the optimizer.

    Args:
        student_net / fake_net: the networks (default: deep copies of the teacher's); TDM-unify passes copies
            with a steps input (``nodes.tdm.steps.add_steps_input``).
        lora_targets: module-name suffixes for LoRA.  extra_trainable: names trained in full beside LoRA.
        prediction_type: what the given networks predict (default: the teacher's).
    """
    pred = prediction_type or teacher.prediction_type
    student = _trainable(student_net or copy.deepcopy(teacher.net), cfg.lora_rank, lora_targets, extra_trainable)
    fake = _trainable(fake_net or copy.deepcopy(teacher.net), cfg.fake_lora_rank, lora_targets, extra_trainable)
    pair = TDMPair(student, fake)
    groups = [{"params": list(trainable_parameters(student).values()), "lr_scale": cfg.generator_lr_ratio,
               "max_norm": cfg.grad_clip},
              {"params": list(trainable_parameters(fake).values()), "lr_scale": 1.0, "max_norm": cfg.grad_clip}]
    opt = PairAdamW(groups, lr=cfg.lr, weight_decay=0.0)
    run = TDMRun(pair, view_like(teacher, student, pred), view_like(teacher, fake, pred), opt)
    if cfg.ema_decay > 0:
        run.ema_target = _StudentOnly(copy.deepcopy(student)).eval()
        run.ema = EMA(_StudentOnly(student), run.ema_target, cfg.ema_decay)
    return run


def draw_steps(cfg: TDMConfig | TDMVideoConfig, gen: torch.Generator) -> int:
    """K of this training step: fixed, or K ~ U{1..K_max} for TDM-unify (paper eq. 8's expectation over K)."""
    if not cfg.unify:
        return cfg.student_steps
    return int(torch.randint(1, cfg.student_steps + 1, (1,), generator=gen, device=gen.device))


def distill_tdm(teacher: View, run: TDMRun, pool: PromptPool, cfg: TDMConfig | TDMVideoConfig, *,
                checkpointer: Checkpointer | None = None, preview_fn: Callable[[int], Any] | None = None,
                preview_every: int = 0, device: str = "cpu", autocast: torch.dtype | None = None,
                max_seconds: float | None = None, meta: dict[str, Any] | None = None,
                log: list[dict[str, float]] | None = None) -> TrainState:
    """Run ``cfg.steps`` TDM steps (resuming from ``checkpointer``'s latest); the loss is L_G + L_fake.

    Every draw of step n comes from ``step_generator(cfg.seed, n)`` (K, prompts, noise, k, τ), so the run is
    deterministic and a resumed run repeats the uninterrupted one. ``log`` (optional) receives each step's
    ``{"generator", "fake", "K"}``.
    """
    loss_fn = cfg.loss()
    teacher.net.eval().requires_grad_(False)

    def step_fn(step: int, gen: torch.Generator) -> Tensor:
        # K must be equal on every rank of a data-parallel run (FSDP gathers each block once per call, so the
        # ranks must make the same calls): it comes from rank 0's stream of this step, which every rank rebuilds.
        # This rank's own draw is still taken, so its later draws (prompts, noise) are where a 1-process run has them.
        own = draw_steps(cfg, gen)
        k = draw_steps(cfg, step_generator(cfg.seed, step, gen.device)) if cfg.unify else own
        b = local_batch_size(cfg.batch_size)                            # this rank's share of the batch
        batch = pool.batch(b, gen)
        tcond = steps_condition(k, b, batch.device) if cfg.unify else None
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast, enabled=autocast is not None):
            gen_loss, fake_loss = loss_fn(run.student, batch, teacher=teacher, fake=run.fake, steps=k, tcond=tcond)
        g, f = gen_loss.mean(), fake_loss.mean()
        if log is not None:
            log.append({"generator": float(g.detach()), "fake": float(f.detach()), "K": k})
        return g + f

    spec = FitSpec(total_steps=cfg.steps, seed=cfg.seed, lr_at=warmup_lr(cfg.lr, cfg.warmup), grad_clip=0.0, device=device,
                   checkpointer=checkpointer, preview_every=preview_every,
                   meta={"config": asdict(cfg), **(meta or {})}, max_seconds=max_seconds)
    return fit(run.pair, run.optimizer, step_fn, spec, target=run.ema_target, ema=run.ema, preview_fn=preview_fn)


def student_view(run: TDMRun) -> View:
    """The student to sample: the EMA copy when the run keeps one, else the trained weights."""
    if run.ema_target is None:
        return run.student
    return view_like(run.student, run.ema_target.student)
