"""Single-file Stable Diffusion checkpoints in the original (LDM) layout, written from diffusers /
transformers modules, and random-weight ones of the real architectures for benchmarks.

``to_ldm_*`` invert our loader's key mapping (``nodes.core.loaders.ldm_keys``); the tests check them
against diffusers' own LDM converter, an independent reading of that layout. :func:`random_checkpoint`
builds the published SD1.5 / SDXL configurations (``nodes/core/configs``) on the meta device and fills
each tensor with random numbers in the file's dtype: the 2 GB SD1.5 file takes seconds and no fp32 copy
(speed does not depend on weight values).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

L = 2  # resnets per down level in SD1.5 and SDXL


_RES_INV = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
            "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _res(tail: str, table: dict[str, str]) -> str:
    head, _, rest = tail.partition(".")
    return f"{table[head]}.{rest}"


def to_ldm_unet(state: dict, attn_up: list[bool]) -> dict:
    out = {}
    fixed = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
             "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
             "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
    for key, value in state.items():
        new = None
        for a, b in fixed.items():
            if key.startswith(a):
                new = b + key[len(a):]
        if m := re.match(r"down_blocks\.(\d)\.(resnets|attentions|downsamplers)\.(\d)\.(.+)$", key):
            level, kind, j, tail = int(m[1]), m[2], int(m[3]), m[4]
            i = 1 + level * (L + 1) + (L if kind == "downsamplers" else j)
            new = {"resnets": f"input_blocks.{i}.0.{_res(tail, _RES_INV) if kind == 'resnets' else ''}",
                   "attentions": f"input_blocks.{i}.1.{tail}",
                   "downsamplers": f"input_blocks.{i}.0.op.{tail.removeprefix('conv.')}"}[kind]
        elif m := re.match(r"up_blocks\.(\d)\.(resnets|attentions|upsamplers)\.(\d)\.(.+)$", key):
            level, kind, j, tail = int(m[1]), m[2], int(m[3]), m[4]
            i = level * (L + 1) + (L if kind == "upsamplers" else j)
            new = {"resnets": f"output_blocks.{i}.0.{_res(tail, _RES_INV) if kind == 'resnets' else ''}",
                   "attentions": f"output_blocks.{i}.1.{tail}",
                   "upsamplers": f"output_blocks.{i}.{2 if attn_up[level] else 1}.{tail}"}[kind]
        elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d)\.(.+)$", key):
            kind, j, tail = m[1], int(m[2]), m[3]
            new = f"middle_block.1.{tail}" if kind == "attentions" else f"middle_block.{2 * j}.{_res(tail, _RES_INV)}"
        assert new is not None, key
        out["model.diffusion_model." + new] = value
    return out


_VAE_RES_INV = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
_VAE_ATTN_INV = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}


def to_ldm_vae(state: dict, levels: int) -> dict:
    out = {}
    for key, value in state.items():
        new = key
        if m := re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d)\.(resnets|downsamplers|upsamplers)\.(\d)\.(.+)$", key):
            side, d, level, kind, j, tail = m[1], m[2], int(m[3]), m[4], m[5], m[6]
            level = levels - 1 - level if d == "up" else level
            new = (f"{side}.{d}.{level}.block.{j}.{_res(tail, _VAE_RES_INV)}" if kind == "resnets"
                   else f"{side}.{d}.{level}.{kind[:-2]}.{tail}")
        elif m := re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d)\.(.+)$", key):
            side, kind, j, tail = m[1], m[2], int(m[3]), m[4]
            if kind == "resnets":
                new = f"{side}.mid.block_{j + 1}.{_res(tail, _VAE_RES_INV)}"
            else:
                head, _, rest = tail.partition(".")
                rest = rest.removeprefix("0.")
                new = f"{side}.mid.attn_1.{_VAE_ATTN_INV[head]}.{rest}"
                if value.ndim == 2:
                    value = value[:, :, None, None]
        elif m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.+)$", key):
            new = f"{m[1]}.norm_out.{m[2]}"
        out["first_stage_model." + new] = value
    return out


def to_ldm_checkpoint(unet: Any, vae: Any, text: Any) -> dict:
    attn_up = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    state = to_ldm_unet(unet.state_dict(), attn_up)
    state.update(to_ldm_vae(vae.state_dict(), len(vae.config.block_out_channels)))
    # LDM files store the HF CLIP names with their text_model. level (transformers 5 drops it in memory)
    state.update({"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v
                  for k, v in text.state_dict().items()})
    return {k: v.contiguous() for k, v in state.items()}


def to_open_clip(clip_g: Any) -> dict:
    """transformers CLIPTextModelWithProjection -> open_clip text-tower names (SDXL's embedder 1)."""
    out, qkv = {}, {}
    table = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for key, value in clip_g.state_dict().items():
        key = key.removeprefix("text_model.")
        if m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)$", key):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
        elif m := re.match(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", key):
            out[f"transformer.resblocks.{m[1]}.{table[m[2]]}.{m[3]}"] = value
        elif key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.split(".")[-1]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
    for (layer, kind), parts in qkv.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def _meta_modules(arch: str) -> tuple[Any, Any, list[Any]]:
    """UNet, VAE and text encoder(s) of the published configuration, on the meta device (shapes only)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from fewstep.nodes.core.loaders.sd import SCALING, bundled_config

    with torch.device("meta"):
        unet = UNet2DConditionModel(**bundled_config(f"{'sd1' if arch == 'sd15' else 'sdxl'}_unet"))
        vae = AutoencoderKL(**{**bundled_config("vae"), "scaling_factor": SCALING["sd1" if arch == "sd15" else "sdxl"]})
        texts = [CLIPTextModel(CLIPTextConfig(**bundled_config("clip_l")))]
        if arch == "sdxl":
            texts.append(CLIPTextModelWithProjection(CLIPTextConfig(**bundled_config("clip_g"))))
    return unet, vae, texts


def _random_like(name: str, like: torch.Tensor, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Weights ~ N(0, 1/fan_in) (activations keep their scale through the deep UNet, so fp16 does not
    overflow), norm weights 1, biases and the rest 0."""
    if like.ndim >= 2:
        fan_in = like[0].numel()
        return (torch.randn(like.shape, generator=generator) / math.sqrt(fan_in)).to(dtype)
    if name.endswith("weight") and ("norm" in name or "ln_" in name):
        return torch.ones(like.shape, dtype=dtype)
    return torch.zeros(like.shape, dtype=dtype)


def ldm_layout(arch: str) -> dict[str, torch.Tensor]:
    """Every tensor of a ``sd15`` / ``sdxl`` single file (LDM names), as meta tensors: names and shapes."""
    if arch not in ("sd15", "sdxl"):
        raise ValueError(f"arch must be 'sd15' or 'sdxl', got {arch!r}")
    unet, vae, texts = _meta_modules(arch)
    attn_up = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    layout = to_ldm_unet(unet.state_dict(), attn_up)
    layout.update(to_ldm_vae(vae.state_dict(), len(vae.config.block_out_channels)))
    prefix = "cond_stage_model.transformer.text_model." if arch == "sd15" else \
        "conditioner.embedders.0.transformer.text_model."
    layout.update({prefix + k.removeprefix("text_model."): v for k, v in texts[0].state_dict().items()
                   if not k.endswith("position_ids")})
    if arch == "sdxl":
        layout.update({"conditioner.embedders.1.model." + k: v for k, v in to_open_clip(texts[1]).items()})
    return layout


def random_checkpoint(arch: str, dtype: torch.dtype = torch.float16, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random-weight single-file checkpoint of the real ``sd15`` or ``sdxl`` architecture, LDM layout."""
    generator = torch.Generator().manual_seed(seed)
    return {k: _random_like(k, v, dtype, generator) for k, v in ldm_layout(arch).items()}


def write_random_checkpoint(path: Path, arch: str, dtype: torch.dtype = torch.float16) -> Path:
    """:func:`random_checkpoint` saved as ``.safetensors`` at ``path`` (folders created)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(random_checkpoint(arch, dtype), str(path))
    return path
