"""Tiny random Stable Diffusion 1.5-architecture components and their original single-file (LDM) layout.

The SD1.5 layout is kept exactly (4 levels, 2 resnets per level, cross-attention on the first three, 8
heads, CLIP text transformer, 4-level VAE); only widths and depths shrink: UNet channels (32, 64, 128, 128)
instead of (320, 640, 1280, 1280), CLIP hidden 64 with 2 layers instead of 768 with 12 (vocabulary and 77
positions kept, so the real tokenizer applies), VAE (32, 32, 64, 64) instead of (128, 256, 512, 512).

``to_ldm_*`` write the LDM key names; tests check them against diffusers' own LDM converter, an independent
reading of that layout.
"""

from __future__ import annotations

import re

import torch

L = 2  # resnets per down level in SD1.5


def tiny_sd15():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64, 128, 128), layers_per_block=2, cross_attention_dim=64,
        attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")).eval()
    vae = AutoencoderKL(block_out_channels=(32, 32, 64, 64), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4).eval()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
                                        bos_token_id=0, eos_token_id=2, pad_token_id=1)).eval()
    # random init leaves the UNet's output convs at zero (diffusers zero-inits conv_out / proj_out); perturb
    # every tensor so no mapping mistake can hide behind zeros
    with torch.no_grad():
        for module in (unet, vae, text):
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return unet, vae, text


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


def to_ldm_checkpoint(unet, vae, text) -> dict:
    attn_up = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    state = to_ldm_unet(unet.state_dict(), attn_up)
    state.update(to_ldm_vae(vae.state_dict(), len(vae.config.block_out_channels)))
    # LDM files store the HF CLIP names with their text_model. level (transformers 5 drops it in memory)
    state.update({"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v
                  for k, v in text.state_dict().items()})
    return {k: v.contiguous() for k, v in state.items()}


def tiny_sdxl():
    """SDXL layout (3 levels, no attention on the first, linear projections, text_time added conditioning,
    CLIP-L + OpenCLIP-G text towers) at reduced widths: UNet 32/64/64 with transformer depths 1/1/2."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64, 64), layers_per_block=2, cross_attention_dim=128,
        attention_head_dim=(1, 1, 1), transformer_layers_per_block=(1, 1, 2), use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=64 + 6 * 256).eval()
    common = dict(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=1, max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    clip_l = CLIPTextModel(CLIPTextConfig(hidden_act="quick_gelu", **common)).eval()
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(hidden_act="gelu", projection_dim=64, **common)).eval()
    with torch.no_grad():
        for module in (unet, clip_l, clip_g):
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return unet, clip_l, clip_g


def to_open_clip(clip_g) -> dict:
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
