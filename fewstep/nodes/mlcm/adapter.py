"""The one place where this pack meets core's MODEL / CLIP link values.

MODEL is ``nodes.core.denoiser.Denoiser`` whose ``model_fn`` is a ``nodes.core.loaders.UNetFn`` (a diffusers
UNet called with ``cond["context"]``) on a ``DiscreteVPSchedule``; CLIP is ``nodes.core.text.TextEncoder``.
Training works on :class:`~nodes.mlcm.vp.VPNet` views; a trained UNet goes back as a cloned Denoiser.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fewstep.nodes.mlcm.vp import UNetAdapter, VPNet, VPSchedule


def unet_of(model: Any) -> nn.Module:
    """The diffusers UNet inside a core MODEL (clear error for other networks)."""
    unet = getattr(getattr(model, "model_fn", None), "unet", None)
    if not isinstance(unet, nn.Module) or not hasattr(unet, "time_embedding"):
        raise TypeError(f"distillation needs a MODEL holding a diffusers UNet2DConditionModel, got "
                        f"{type(getattr(model, 'model_fn', model)).__name__}")
    return unet


def vp_schedule_of(model: Any) -> VPSchedule:
    """ᾱ_t = 1 / (1 + σ_t²) from a discrete VP MODEL's σ table."""
    sigmas = getattr(model.schedule, "sigmas", None)
    if sigmas is None:
        raise TypeError(f"distillation needs a discrete VP schedule (DDPM-style), got {type(model.schedule).__name__}")
    return VPSchedule((1.0 / (1.0 + sigmas.double() ** 2)).float().cpu())


def teacher_view(model: Any) -> VPNet:
    """The training-side view of a teacher MODEL (ε / v / x0 prediction)."""
    if model.prediction not in ("eps", "v", "x0"):
        raise TypeError(f"distillation supports eps / v / x0 models, not {model.prediction!r}")
    return VPNet(UNetAdapter(unet_of(model)), vp_schedule_of(model), model.prediction)


def student_model(teacher: Any, unet: nn.Module, name: str) -> Any:
    """A MODEL for a trained UNet: the teacher's wrapper with the network swapped (same cond convention)."""
    from fewstep.nodes.core.loaders import UNetFn

    unet = unet.eval().requires_grad_(False)
    return teacher.clone(model_fn=UNetFn(unet), extras=dict(teacher.extras, name=name, patches=[]))


@torch.no_grad()
def encode_prompts(clip: Any, prompts: list[str]) -> torch.Tensor:
    """Token states [N, T, D] of ``prompts`` through a core CLIP (batched for the built-in MiniLM)."""
    if getattr(clip, "kind", None) == "builtin":
        return torch.cat([clip.encoders[0].encode_tokens(prompts[i:i + 256])[0].float()
                          for i in range(0, len(prompts), 256)])
    return torch.cat([clip.encode(p)[0][0].float() for p in prompts])
