"""TDM-unify's step-count input on a diffusers UNet, and folding a fixed K back out for sampling.

The step count K enters through ``time_cond_proj_dim`` (the w-embedding slot of LCM, which SLAM also uses):
``TimestepEmbedding`` computes ``linear_1(e + P c)`` with ``c`` = one-hot(K) [8] and ``P = cond_proj.weight``
[C0, 8] (no bias), zero-initialised so the student starts as the teacher. For a fixed K the extra term is the
constant column ``P[:, K-1]``, so ``linear_1(e + P c) = linear_1(e) + W₁ P[:, K-1]`` folds exactly into
``linear_1``'s bias: every K gives a plain UNet of the teacher's architecture (any sampler, loader, quantizer
or LoRA tool can use it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fewstep.nodes.core.train.devices import place
from fewstep.nodes.tdm.loss import STEPS_COND_DIM, steps_condition


def unet_config(unet: nn.Module) -> dict[str, Any]:
    """The constructor config of a diffusers (or lean) UNet, without diffusers' private keys."""
    return {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}


def add_steps_input(unet: nn.Module, dim: int = STEPS_COND_DIM) -> nn.Module:
    """A diffusers copy of ``unet`` with ``time_cond_proj_dim = dim`` and a zero ``cond_proj`` (= the input)."""
    from diffusers import UNet2DConditionModel

    config = unet_config(unet)
    if config.get("time_cond_proj_dim") is not None:
        raise ValueError(f"add_steps_input: the UNet already has time_cond_proj_dim={config['time_cond_proj_dim']}")
    config["time_cond_proj_dim"] = dim
    out = UNet2DConditionModel(**config)
    missing, unexpected = out.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any("cond_proj" not in name for name in missing):
        raise ValueError(f"add_steps_input: unexpected UNet layout (missing {missing[:3]}, unexpected {unexpected[:3]})")
    nn.init.zeros_(out.time_embedding.cond_proj.weight)
    p = next(unet.parameters())
    return place(out, p.device, p.dtype)


def has_steps_input(unet: nn.Module) -> bool:
    return getattr(getattr(unet, "time_embedding", None), "cond_proj", None) is not None


@torch.no_grad()
def fold_steps(unet: nn.Module, steps: int) -> nn.Module:
    """A plain UNet (no ``cond_proj``) equal to ``unet`` called with the one-hot of ``steps``."""
    from diffusers import UNet2DConditionModel

    if not has_steps_input(unet):
        raise ValueError("fold_steps: this UNet has no steps input (time_cond_proj_dim is None)")
    emb = unet.time_embedding
    w = emb.cond_proj.weight                                                   # [C0, dim]
    shift = emb.cond_proj(steps_condition(steps, 1, w.device, w.shape[1]).to(w.dtype))[0]   # [C0] = P[:, K-1]
    config = unet_config(unet)
    config["time_cond_proj_dim"] = None
    plain = UNet2DConditionModel(**config)
    state = {k: v for k, v in unet.state_dict().items() if "cond_proj" not in k}
    lin = emb.linear_1
    bias = lin.bias if lin.bias is not None else torch.zeros(lin.out_features, device=w.device, dtype=w.dtype)
    state["time_embedding.linear_1.bias"] = bias + lin.weight @ shift
    plain.load_state_dict(state, strict=True)
    return place(plain, w.device, w.dtype).eval().requires_grad_(False)
