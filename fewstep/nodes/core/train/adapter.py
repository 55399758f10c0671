"""Where the trainers meet core's MODEL / CLIP link values, and the LoRA adapter they train.

MODEL is :class:`~fewstep.nodes.core.denoiser.Denoiser` whose ``model_fn`` is a
``nodes.core.loaders.UNetFn`` (a diffusers UNet called with ``cond["context"]``) on a
:class:`~fewstep.nodes.core.train.vp.DiscreteVPSchedule`; CLIP is ``nodes.core.text.TextEncoder``.
Training works on :class:`~fewstep.nodes.core.train.vp.VPNet` views (``net(x, t, cond, timestep_cond)``);
a trained UNet goes back as a cloned Denoiser (:func:`student_model`).

SDXL-architecture UNets (two text encoders, pooled embeddings and time ids as ``added_cond_kwargs``) plug
in here: :func:`encode_prompts` returns a :class:`~fewstep.nodes.core.train.vp.Conditioning` for them and
:class:`UNetAdapter` forwards its ``added_cond_kwargs``; the tensor path (SD1.5-style UNets, the built-in
teacher) is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from fewstep.nodes.core.train.loop import merged_state_dict
from fewstep.nodes.core.train.vp import Cond, Conditioning, DiscreteVPSchedule, VPNet

if TYPE_CHECKING:
    from fewstep.nodes.core.denoiser import Denoiser
    from fewstep.nodes.core.text import TextEncoder

# TLCM's LoRA targets (methods.md §1) in diffusers' UNet2DConditionModel names; every trainer uses them.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2", "conv_shortcut", "time_emb_proj")


class UNetAdapter(nn.Module):
    """Calls a diffusers ``UNet2DConditionModel`` with the ``(x, t, cond, timestep_cond)`` convention.

    ``cond`` is token states [B, T, D] or a :class:`Conditioning` (its ``added_cond_kwargs`` go to the UNet,
    e.g. SDXL's ``text_embeds`` / ``time_ids``).
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, t: Tensor, cond: Cond, timestep_cond: Tensor | None = None) -> Tensor:
        dtype = next(self.unet.parameters()).dtype
        tc = None if timestep_cond is None else timestep_cond.to(dtype)
        if isinstance(cond, Conditioning):
            extra = {k: v.to(dtype) for k, v in (cond.added_cond_kwargs or {}).items()}
            return self.unet(x.to(dtype), t, encoder_hidden_states=cond.hidden_states.to(dtype), timestep_cond=tc,
                             added_cond_kwargs=extra or None).sample
        return self.unet(x.to(dtype), t, encoder_hidden_states=cond.to(dtype), timestep_cond=tc).sample


def unet_of(model: Denoiser) -> nn.Module:
    """The diffusers UNet inside a core MODEL (clear error for other networks)."""
    unet = getattr(getattr(model, "model_fn", None), "unet", None)
    if not isinstance(unet, nn.Module) or not hasattr(unet, "time_embedding"):
        raise TypeError(f"distillation needs a MODEL holding a diffusers UNet2DConditionModel, got "
                        f"{type(getattr(model, 'model_fn', model)).__name__}")
    return unet


def vp_schedule_of(model: Denoiser) -> DiscreteVPSchedule:
    """The MODEL's discrete VP schedule (its ᾱ_t = 1 / (1 + σ_t²) on CPU; clear error for other schedules)."""
    if not isinstance(model.schedule, DiscreteVPSchedule):
        raise TypeError(f"distillation needs a discrete VP schedule (DDPM-style), got {type(model.schedule).__name__}")
    return DiscreteVPSchedule(model.schedule.sigmas.cpu())


def teacher_view(model: Denoiser) -> VPNet:
    """The training-side view of a teacher MODEL (ε / v / x0 prediction)."""
    if model.prediction not in ("eps", "v", "x0"):
        raise TypeError(f"distillation supports eps / v / x0 models, not {model.prediction!r}")
    return VPNet(UNetAdapter(unet_of(model)), vp_schedule_of(model), model.prediction)


def student_model(teacher: Denoiser, unet: nn.Module, name: str) -> Denoiser:
    """A MODEL for a trained UNet: the teacher's wrapper with the network swapped (same cond convention)."""
    from fewstep.nodes.core.loaders import UNetFn

    unet = unet.eval().requires_grad_(False)
    return teacher.clone(model_fn=UNetFn(unet), extras=dict(teacher.extras, name=name, patches=[]))


def plain_unet(unet: nn.Module) -> nn.Module:
    """The UNet without adapters: LoRA merged into a fresh diffusers UNet of the same config (as is without LoRA)."""
    if not any("lora_" in k for k in unet.state_dict()):
        return unet
    from diffusers import UNet2DConditionModel

    plain = UNet2DConditionModel(**{k: v for k, v in unet.config.items() if not k.startswith("_")})
    plain.load_state_dict(merged_state_dict(unet))
    return plain


@torch.no_grad()
def encode_prompts(clip: TextEncoder, prompts: list[str]) -> Cond:
    """Conditioning of ``prompts`` through a core CLIP: token states [N, T, D] (batched for the built-in MiniLM).

    SDXL (``clip.kind == "sdxl"``) would return a :class:`Conditioning` with ``text_embeds`` (the pooled
    output) and ``time_ids`` beside the states; that path is not built yet, the trainers take tensors today.
    """
    if getattr(clip, "kind", None) == "builtin":
        return torch.cat([clip.encoders[0].encode_tokens(prompts[i:i + 256])[0].float()
                          for i in range(0, len(prompts), 256)])
    return torch.cat([clip.encode(p)[0][0].float() for p in prompts])
