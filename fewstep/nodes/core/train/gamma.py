"""A scalar condition through the UNet's guidance-embedding slot: LCM's w-embedding, SLAM's γ input.

The condition enters a diffusers UNet through ``time_cond_proj_dim`` (LCM's w-embedding slot):
``TimestepEmbedding`` adds ``cond_proj(emb(γ))`` to the sinusoidal timestep features before ``linear_1``.
A zero-initialised ``cond_proj`` makes the new student equal the teacher at step 0. At inference γ = 1
always, so ``linear_1(e + P c) = linear_1(e) + W₁ P c``: the constant folds into ``linear_1``'s bias and the
shipped student has exactly the teacher's architecture (any UNet loader and sampler can use it).

SLAM (arXiv 2404.13903) trains through this slot; the students' export (fold at γ = 1) and the consistency
trainer's previews use it too, so it lives in core.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def guidance_embedding(w: Tensor, dim: int) -> Tensor:
    """Fourier embedding of a scalar per sample (the LCM w-embedding slot, reused by SLAM for γ).

    w [B] is scaled by 1000 like a timestep; the first dim/2 entries are sines, the rest cosines of
    geometric frequencies 1 .. 1/10000 (the transformer positional code). Returns [B, dim].
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=w.device) / max(half - 1, 1))
    arg = (w.float() * 1000.0)[:, None] * freqs[None, :]
    emb = torch.cat([arg.sin(), arg.cos()], dim=1)
    return nn.functional.pad(emb, (0, dim - 2 * half))


def gamma_embedding(gamma: Tensor, dim: int) -> Tensor:
    """The γ condition [B, dim]: the LCM w-embedding of w = 10 - 10γ (γ = 1 ↦ w = 0)."""
    return guidance_embedding(10.0 - 10.0 * gamma, dim)


def _same_kind(unet: nn.Module, config: dict) -> nn.Module:
    """A new UNet of ``unet``'s class built from ``config``: the built-in ``LeanUNet`` stays lean, since
    importing diffusers for its UNet class cost 5.6 s of a 29 s SLAM template run on the 2-core VM."""
    from fewstep.nodes.zoo.lean import LeanUNet

    if isinstance(unet, LeanUNet):
        return LeanUNet(config)
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**config)


def add_gamma_input(unet: nn.Module, dim: int) -> nn.Module:
    """A copy of a UNet (diffusers UNet2DConditionModel or the lean built-in) with ``time_cond_proj_dim =
    dim`` (zero-initialised)."""
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}  # "_use_default_values" would reset it
    if config.get("time_cond_proj_dim") not in (None, dim):
        raise ValueError(f"the UNet already has time_cond_proj_dim={config['time_cond_proj_dim']}, not {dim}")
    config["time_cond_proj_dim"] = dim
    student = _same_kind(unet, config)
    missing, unexpected = student.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any("cond_proj" not in name for name in missing):
        raise ValueError(f"unexpected UNet layout: missing {missing[:3]}, unexpected {unexpected[:3]}")
    nn.init.zeros_(student.time_embedding.cond_proj.weight)
    p = next(unet.parameters())
    return _like(student, p)


@torch.no_grad()
def fold_gamma(unet: nn.Module, gamma: float = 1.0) -> nn.Module:
    """The same UNet without the γ input, with γ = ``gamma`` folded into ``time_embedding.linear_1``."""
    emb_layer = unet.time_embedding
    dim = unet.config.get("time_cond_proj_dim")
    if emb_layer.cond_proj is None or dim is None:
        raise ValueError("fold_gamma: this UNet has no γ input (time_cond_proj_dim is None)")
    w = emb_layer.cond_proj.weight
    shift = emb_layer.cond_proj(gamma_embedding(torch.full((1,), gamma, device=w.device), dim).to(w.dtype))[0]
    config = {k: v for k, v in unet.config.items() if not k.startswith("_") and k != "time_cond_proj_dim"}
    plain = _same_kind(unet, config)
    state = {k: v for k, v in unet.state_dict().items() if "cond_proj" not in k}
    lin = emb_layer.linear_1
    bias = lin.bias if lin.bias is not None else torch.zeros(lin.out_features, device=w.device, dtype=w.dtype)
    state["time_embedding.linear_1.bias"] = bias + lin.weight @ shift
    plain.load_state_dict(state, strict=True)
    return _like(plain, w)


def _like(module: nn.Module, ref: Tensor) -> nn.Module:
    """Move ``module`` to ``ref``'s device and dtype (no dtype cast when it already matches)."""
    module = module.to(ref.device)
    return module if ref.dtype == torch.float32 else module.to(ref.dtype)
