"""Tiny random Stable Diffusion 1.5-architecture components and their original single-file (LDM) layout.

The SD1.5 layout is kept exactly (4 levels, 2 resnets per level, cross-attention on the first three, 8
heads, CLIP text transformer, 4-level VAE); only widths and depths shrink: UNet channels (32, 64, 128, 128)
instead of (320, 640, 1280, 1280), CLIP hidden 64 with 2 layers instead of 768 with 12 (vocabulary and 77
positions kept, so the real tokenizer applies), VAE (32, 32, 64, 64) instead of (128, 256, 512, 512).

``to_ldm_*`` (from ``bench/core/ldm_files.py``, shared with ``fewstep bench e2e``) write the LDM key names;
tests check them against diffusers' own LDM converter, an independent reading of that layout.
"""

from __future__ import annotations

import torch

from fewstep.bench.core.ldm_files import L, to_ldm_checkpoint, to_ldm_unet, to_ldm_vae, to_open_clip

__all__ = ["L", "tiny_sd15", "tiny_sdxl", "to_ldm_checkpoint", "to_ldm_unet", "to_ldm_vae", "to_open_clip"]


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
