"""Where the trainers meet core's MODEL / CLIP link values, and the LoRA adapter they train.

MODEL is :class:`~fewstep.nodes.core.denoiser.Denoiser` whose ``model_fn`` is a
``nodes.core.loaders.UNetFn`` (a diffusers UNet called with ``cond["context"]``) on a
:class:`~fewstep.nodes.core.train.vp.DiscreteVPSchedule`; CLIP is ``nodes.core.text.TextEncoder``.
Training works on :class:`~fewstep.nodes.core.train.vp.VPNet` views (``net(x, t, cond, timestep_cond)``);
a trained UNet goes back as a cloned Denoiser (:func:`student_model`).

SDXL-architecture UNets (two text encoders, pooled embeddings and time ids as ``added_cond_kwargs``) plug
in here: :func:`encode_prompts` returns a :class:`~fewstep.nodes.core.train.vp.Conditioning` for them (built
like the sampling nodes build theirs) and :class:`UNetAdapter` forwards its ``added_cond_kwargs``; the tensor
path (SD1.5-style UNets, the built-in teacher) is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from fewstep.nodes.core.train.loop import merged_state_dict
from fewstep.nodes.core.train.vp import Cond, Conditioning, DiscreteVPSchedule, VPNet, cat_tokens

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
def encode_prompts(clip: TextEncoder, prompts: list[str], latent_hw: tuple[int, int] | None = None) -> Cond:
    """Conditioning of ``prompts`` [N] through a core CLIP, as the trainers feed it to the UNet.

    * built-in MiniLM / SD1.x: token states [N, T, D] (batched for the MiniLM), as before;
    * SDXL (``clip.kind == "sdxl"``): a :class:`Conditioning` of the states [N, T, 768 + 1280] with
      ``added_cond_kwargs`` = ``text_embeds`` (OpenCLIP-G's pooled output [N, D']) and ``time_ids`` [N, 6],
      built per prompt by :func:`sdxl_conditioning` for latents of size ``latent_hw`` (required then).
    """
    kind = getattr(clip, "kind", None)
    if kind == "builtin":
        return torch.cat([clip.encoders[0].encode_tokens(prompts[i:i + 256])[0].float()
                          for i in range(0, len(prompts), 256)])
    if kind == "sdxl":
        if latent_hw is None:
            raise ValueError("SDXL conditioning needs the latent size (its time ids): pass latent_hw")
        return Conditioning.cat([sdxl_conditioning(clip.encode(p), latent_hw) for p in prompts])
    return cat_tokens([clip.encode(p)[0][0].float() for p in prompts])    # long prompts: 77·k tokens


def sdxl_conditioning(conditioning: list[list[object]], latent_hw: tuple[int, int]) -> Conditioning:
    """One CONDITIONING entry of an SDXL CLIP as the trainers' :class:`Conditioning` [1, ...].

    The added conditioning is exactly what the sampling nodes give the UNet (``nodes.core.sampling.model_cond``,
    read by ``UNetFn``): ``text_embeds`` = the pooled output [1, D'] and ``time_ids`` = (orig h, orig w,
    crop top, crop left, target h, target w) [1, 6] (Podell et al. 2023, SDXL Sec. 2.2), the image size
    being latent size × 8 unless the entry says otherwise. A student trained on this conditioning therefore
    samples (KSampler / SamplerCustom) under the same one.
    """
    from fewstep.nodes.core.sampling import model_cond

    shape_only = torch.empty((1, 1, *latent_hw), device="meta")     # model_cond reads only the latent's h, w
    cond = model_cond(conditioning, shape_only, "sdxl")             # context [1,T,D], pooled [1,D'], time_ids [1,6]
    return Conditioning(cond["context"].float(), {"text_embeds": cond["pooled"].float(),
                                                  "time_ids": cond["time_ids"].float()})


def check_conditioning(unet: nn.Module, cond: Cond) -> None:
    """A clear error when an SDXL-style UNet (``addition_embed_type="text_time"``) gets plain token states
    (a CLIP of another architecture), instead of diffusers' TypeError deep inside the forward pass."""
    needs = getattr(unet, "config", {}).get("addition_embed_type") == "text_time"
    has = isinstance(cond, Conditioning) and bool(cond.added_cond_kwargs)
    if needs and not has:
        raise TypeError("this UNet is SDXL-style (pooled text embeddings and time ids as added conditioning): "
                        "connect the checkpoint's SDXL CLIP")
