"""MLCM / TLCM / LCM distillation runs: the loss object of a configuration.

The run itself (config, presets, student, loop) is core's consistency-distillation trainer
(``nodes.core.train.distill``); this pack contributes the MLCD / progressive losses for its methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor

from fewstep.nodes.core.train.batches import DistillBatch
from fewstep.nodes.core.train.distill import DistillConfig, DistillLoss
from fewstep.nodes.mlcm.losses import MLCDLoss, ProgressiveLCDLoss
from fewstep.nodes.mlcm.terms import zoo_terms

if TYPE_CHECKING:
    from fewstep.nodes.core.vae import VAEWrapper


def make_loss(cfg: DistillConfig, perceptual: Callable[[Tensor], Tensor] | None = None,
              reward: Callable[[Tensor, DistillBatch], Tensor] | None = None) -> DistillLoss:
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
    raise ValueError(f"method {cfg.method!r} is not an MLCM / LCM method (SLAM: nodes.slam.loss.make_loss)")


def zoo_loss(cfg: DistillConfig, vae: VAEWrapper | None, device: str) -> DistillLoss:
    """The loss of a trainer node: :func:`make_loss` with the zoo's perceptual / preference terms when weighted."""
    return make_loss(cfg, *zoo_terms(cfg.perceptual_weight, cfg.reward_weight, vae, device))
