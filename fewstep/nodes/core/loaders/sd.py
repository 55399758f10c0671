"""Stable Diffusion 1.x / SDXL: single-file (LDM layout) checkpoints and diffusers folders, offline.

Architectures come from the configs bundled in ``fewstep/nodes/core/configs/`` (the published SD1.5 / SDXL
configurations); channel widths, depths and context sizes are then read from the tensors' shapes, so the
same code loads full-size models and the reduced-width ones the tests build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fewstep.nodes.core.loaders import ldm_keys as K
from fewstep.nodes.core.loaders.files import ModelFileError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SCALING = {"sd1": 0.18215, "sdxl": 0.13025}


def bundled_config(name: str) -> dict[str, Any]:
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def detect(state: dict[str, Any]) -> str:
    """``sd1`` | ``sdxl`` for an LDM-layout checkpoint (raises for anything else)."""
    if K.UNET_PREFIX + "input_blocks.0.0.weight" not in state:
        raise ModelFileError("not a Stable Diffusion single-file checkpoint (no model.diffusion_model.* keys)")
    if K.UNET_PREFIX + "label_emb.0.0.weight" in state:
        return "sdxl"
    return "sd1"


def _count(state: dict[str, Any], pattern: str) -> int:
    found = {m.group(1) for k in state if (m := re.match(pattern, k))}
    return len(found)


def unet_config(ldm: dict[str, Any], arch: str) -> dict[str, Any]:
    """diffusers UNet2DConditionModel config for LDM UNet weights (prefix stripped)."""
    levels, per_level = K.unet_levels(ldm)
    cfg = bundled_config(f"{arch}_unet")
    widths, attn, depth = [], [], []
    for level in range(levels):
        first = 1 + level * (per_level + 1)
        widths.append(int(ldm[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0]))
        has_attn = f"input_blocks.{first}.1.proj_in.weight" in ldm
        attn.append(has_attn)
        depth.append(_count(ldm, rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\.") if has_attn else 1)
    key_k = next(k for k in ldm if k.endswith("attn2.to_k.weight"))
    proj = next(k for k in ldm if k.endswith("proj_in.weight"))
    cfg.update(
        in_channels=int(ldm["input_blocks.0.0.weight"].shape[1]),
        out_channels=int(ldm["out.2.weight"].shape[0]),
        block_out_channels=widths, layers_per_block=per_level,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        cross_attention_dim=int(ldm[key_k].shape[1]),
        use_linear_projection=ldm[proj].ndim == 2,
    )
    if arch == "sdxl":
        # SDXL: 64-channel heads; added conditioning = pooled text + 6 size/crop numbers x 256 Fourier dims
        cfg.update(attention_head_dim=[max(1, w // 64) for w in widths],
                   transformer_layers_per_block=depth,
                   projection_class_embeddings_input_dim=int(ldm["label_emb.0.0.weight"].shape[1]))
    return cfg


def vae_config(ldm: dict[str, Any], arch: str) -> dict[str, Any]:
    levels = _count(ldm, r"encoder\.down\.(\d+)\.")
    cfg = bundled_config("vae")
    cfg.update(
        in_channels=int(ldm["encoder.conv_in.weight"].shape[1]),
        out_channels=int(ldm["decoder.conv_out.weight"].shape[0]),
        latent_channels=int(ldm["quant_conv.weight"].shape[0]) // 2,
        block_out_channels=[int(ldm[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(levels)],
        layers_per_block=_count(ldm, r"encoder\.down\.0\.block\.(\d+)\."),
        down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
        scaling_factor=SCALING[arch],
    )
    return cfg


def clip_config(hf: dict[str, Any], name: str) -> dict[str, Any]:
    """transformers CLIPTextConfig fields for converted text-encoder weights."""
    cfg = bundled_config(name)
    emb = hf["text_model.embeddings.token_embedding.weight"]
    hidden = int(emb.shape[1])
    cfg.update(vocab_size=int(emb.shape[0]), hidden_size=hidden,
               max_position_embeddings=int(hf["text_model.embeddings.position_embedding.weight"].shape[0]),
               intermediate_size=int(hf["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
               num_hidden_layers=_count(hf, r"text_model\.encoder\.layers\.(\d+)\."),
               num_attention_heads=max(1, hidden // 64))
    if "text_projection.weight" in hf:
        cfg["projection_dim"] = int(hf["text_projection.weight"].shape[0])
    return cfg


def _load_module(build: Callable[[], torch.nn.Module] | torch.nn.Module, weights: dict[str, Any], what: str, path: Path,
                 dtype: torch.dtype, device: str) -> Any:
    """Build a module without random initialisation and give it ``weights`` (strict, buffers such as CLIP's
    position_ids excepted), on ``device`` in ``dtype``.

    ``build()`` runs on the meta device: parameters get shapes but no memory and no init kernels (random
    init of the SD1.5 UNet alone took seconds on a CPU, only to be overwritten). ``load_state_dict(...,
    assign=True)`` then makes the file's tensors the parameters themselves: no second copy, and tensors
    already on ``device`` in ``dtype`` (a fp16 file read straight to the GPU) are not touched. Buffers the
    file does not hold are rebuilt (:func:`_materialise_buffers`).

    transformers 5's CLIPTextModel dropped the ``text_model.`` level of its parameter names (the
    WithProjection variant kept it): the prefix is fitted to the module at hand. A module built already
    (initialised) is accepted too."""
    if isinstance(build, torch.nn.Module):
        module = build
    else:
        with torch.device("meta"):
            module = build()
    names = module.state_dict().keys()
    if not any(k.startswith("text_model.") for k in names):
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    weights = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in weights.items()}
    missing, unexpected = module.load_state_dict(weights, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelFileError(f"{path}: {what} weights do not fit the architecture: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    _materialise_buffers(module, device)
    return module.eval().requires_grad_(False)


def _materialise_buffers(module: torch.nn.Module, device: str) -> None:
    """Buffers left on the meta device (not stored in files): CLIP's ``position_ids`` ([1, P] = 0..P-1, as
    transformers builds it). Any other is an architecture this loader does not know: refused."""
    for name, buffer in list(module.named_buffers()):
        if not buffer.is_meta:
            continue
        if not name.endswith("position_ids"):
            raise ModelFileError(f"{type(module).__name__}: buffer {name!r} is not in the file and cannot be built")
        owner = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
        leaf = name.rpartition(".")[2]
        persistent = leaf not in owner._non_persistent_buffers_set
        owner.register_buffer(leaf, torch.arange(buffer.shape[-1], device=device).expand(buffer.shape).clone(),
                              persistent=persistent)


@dataclass
class SDComponents:
    arch: str
    unet: Any
    vae: Any
    text_encoders: list[Any]
    prediction: str = "eps"


def load_single_file(state: dict[str, Any], path: Path, dtype: torch.dtype, device: str) -> SDComponents:
    """Build UNet, VAE and CLIP text encoder(s) from one LDM-layout state dict."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    arch = detect(state)
    if arch == "sdxl" and not any(k.startswith(K.CLIP_L_PREFIXES[1]) for k in state):
        return _load_sdxl_refiner(state, path, dtype, device)
    if arch == "sd1" and any(k.startswith(SD2_CLIP_H_PREFIX) for k in state):
        return _load_sd2(state, path, dtype, device)
    try:
        unet_ldm = K.split_prefix(state, K.UNET_PREFIX)
        unet = _load_module(lambda: UNet2DConditionModel(**unet_config(unet_ldm, arch)), K.convert_unet(unet_ldm),
                            "UNet", path, dtype, device)
        vae_ldm = K.split_prefix(state, K.VAE_PREFIX)
        vae = _load_module(lambda: AutoencoderKL(**vae_config(vae_ldm, arch)), K.convert_vae(vae_ldm), "VAE", path,
                           dtype, device)
        clip_l = K.convert_clip_l(K.split_prefix(state, K.CLIP_L_PREFIXES[0 if arch == "sd1" else 1]))
        encoders = [_load_module(lambda: CLIPTextModel(CLIPTextConfig(**clip_config(clip_l, "clip_l"))), clip_l,
                                 "CLIP-L", path, dtype, device)]
        if arch == "sdxl":
            clip_g = K.convert_open_clip(K.split_prefix(state, K.OPENCLIP_PREFIX))
            config_g = CLIPTextConfig(**clip_config(clip_g, "clip_g"))
            encoders.append(_load_module(lambda: CLIPTextModelWithProjection(config_g), clip_g, "OpenCLIP-G", path,
                                         dtype, device))
    except KeyError as exc:
        raise ModelFileError(f"{path}: unexpected {arch} checkpoint layout: {exc}") from exc
    return SDComponents(arch, unet, vae, encoders)


REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."
SD2_CLIP_H_PREFIX = "cond_stage_model.model."
# ComfyUI's test for SD2's v-prediction checkpoints (768-v): the spread of one LayerNorm bias of the last
# output block, > 0.09 only in the v-trained weights (comfy/supported_models.py, SD20.model_type)
SD2_V_PROBE = "output_blocks.11.1.transformer_blocks.0.norm1.bias"


def _load_sd2(state: dict[str, Any], path: Path, dtype: torch.dtype, device: str) -> SDComponents:
    """SD 2.x (Rombach et al. 2022, the v2 release): the SD1 UNet layout with 64-channel heads and linear
    projections, conditioned on OpenCLIP-H (an open_clip text tower, penultimate layer, layer-normed);
    eps or v prediction (768-v), 4 input channels or 9 (512-inpainting)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    try:
        unet_ldm = K.split_prefix(state, K.UNET_PREFIX)
        config = unet_config(unet_ldm, "sd1")
        config["attention_head_dim"] = [max(1, w // 64) for w in config["block_out_channels"]]
        unet = _load_module(lambda: UNet2DConditionModel(**config), K.convert_unet(unet_ldm), "UNet", path, dtype, device)
        vae_ldm = K.split_prefix(state, K.VAE_PREFIX)
        vae = _load_module(lambda: AutoencoderKL(**vae_config(vae_ldm, "sd1")), K.convert_vae(vae_ldm), "VAE", path,
                           dtype, device)
        clip_h = K.convert_open_clip(K.split_prefix(state, SD2_CLIP_H_PREFIX))
        config_h = CLIPTextConfig(**clip_config(clip_h, "clip_g"))
        encoders = [_load_module(lambda: CLIPTextModelWithProjection(config_h), clip_h, "OpenCLIP-H", path,
                                 dtype, device)]
    except KeyError as exc:
        raise ModelFileError(f"{path}: unexpected SD2 checkpoint layout: {exc}") from exc
    probe = unet_ldm.get(SD2_V_PROBE)
    v_pred = config["in_channels"] == 4 and probe is not None and float(probe.float().std(unbiased=False)) > 0.09
    return SDComponents("sd2", unet, vae, encoders, "v" if v_pred else "eps")


def _load_sdxl_refiner(state: dict[str, Any], path: Path, dtype: torch.dtype, device: str) -> SDComponents:
    """The SDXL refiner (Podell et al. 2023, Sec. 2.5): the SDXL UNet layout at other widths, conditioned on
    OpenCLIP-G alone (embedder 0) and on 5 size numbers (aesthetic score instead of the target size)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    try:
        unet_ldm = K.split_prefix(state, K.UNET_PREFIX)
        unet = _load_module(lambda: UNet2DConditionModel(**unet_config(unet_ldm, "sdxl")), K.convert_unet(unet_ldm),
                            "UNet", path, dtype, device)
        vae_ldm = K.split_prefix(state, K.VAE_PREFIX)
        vae = _load_module(lambda: AutoencoderKL(**vae_config(vae_ldm, "sdxl")), K.convert_vae(vae_ldm), "VAE", path,
                           dtype, device)
        clip_g = K.convert_open_clip(K.split_prefix(state, REFINER_CLIP_G_PREFIX))
        config_g = CLIPTextConfig(**clip_config(clip_g, "clip_g"))
        encoders = [_load_module(lambda: CLIPTextModelWithProjection(config_g), clip_g, "OpenCLIP-G", path,
                                 dtype, device)]
    except KeyError as exc:
        raise ModelFileError(f"{path}: unexpected SDXL refiner checkpoint layout: {exc}") from exc
    return SDComponents("sdxl_refiner", unet, vae, encoders)


def load_diffusers_folder(folder: Path, dtype: torch.dtype, device: str) -> SDComponents:
    """A diffusers pipeline folder (model_index.json + unet/ vae/ text_encoder[_2]/), offline."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if not (folder / "model_index.json").is_file():
        raise ModelFileError(f"{folder}: not a diffusers folder (no model_index.json)")
    kw = dict(torch_dtype=dtype, local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", **kw)
    vae = AutoencoderKL.from_pretrained(folder / "vae", **kw)
    encoders = [CLIPTextModel.from_pretrained(folder / "text_encoder", **kw)]
    arch = "sd1"
    if (folder / "text_encoder_2").is_dir():
        arch = "sdxl"
        encoders.append(CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", **kw))
    modules = [m.to(device).eval().requires_grad_(False) for m in (unet, vae, *encoders)]
    return SDComponents(arch, modules[0], modules[1], modules[2:])
