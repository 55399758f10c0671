"""Model loading for the core nodes: built-in models, SD1.x / SDXL single files, diffusers folders, LoRA.

Every function returns the link values (``Denoiser`` for MODEL, ``TextEncoder`` for CLIP, ``VAEWrapper``
for VAE). Loaded networks go through the engine's model cache (``files.cached``), keyed by file + dtype +
device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fewstep.nodes.core.loaders.files import WEIGHT_SUFFIXES, ModelFileError, cached, read_state_dict

__all__ = ["ModelFileError", "UNetFn", "list_checkpoints", "load_checkpoint", "load_vae_file", "load_clip_files",
           "load_unet_file", "list_builtin", "pick_device"]


def pick_device() -> tuple[str, Any]:
    """(device, dtype): CUDA in fp16 when present, else CPU in fp32."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.float16
    return "cpu", torch.float32


def list_builtin() -> list[str]:
    from fewstep.nodes.zoo.builtin import list_builtin_checkpoints

    return list_builtin_checkpoints()


def list_checkpoints() -> list[str]:
    """Built-in checkpoints first, then files and diffusers folders under the models' checkpoints/."""
    from fewstep.app.api import current_paths

    paths = current_paths()
    names = list_builtin() + paths.list_models("checkpoints", WEIGHT_SUFFIXES)
    for directory in paths.model_dirs("checkpoints"):
        if directory.is_dir():
            names += sorted(p.parent.relative_to(directory).as_posix() for p in directory.glob("*/model_index.json"))
    return list(dict.fromkeys(names))


@dataclass
class UNetFn:
    """A diffusers UNet2DConditionModel as ``model_fn(x_in, timestep, cond) -> output``.

    ``cond`` is the model cond dict built by the sampling nodes: ``context`` [B, T, D] and, for SDXL,
    ``pooled`` [B, D'] and ``time_ids`` [B, 6]."""

    unet: Any
    patches: list[Any] = field(default_factory=list)

    def __call__(self, x_in: Any, t: Any, cond: dict[str, Any]) -> Any:
        import torch

        param = next(self.unet.parameters())
        batch = x_in.shape[0]
        context = cond["context"]
        context = context.expand(batch, *context.shape[1:]) if context.shape[0] == 1 else context
        added = None
        if cond.get("time_ids") is not None:
            added = {"text_embeds": cond["pooled"].to(param.device, param.dtype).expand(batch, -1),
                     "time_ids": cond["time_ids"].to(param.device, param.dtype).expand(batch, -1)}
        x_in_d, t_d = x_in.to(param.device, param.dtype), t.to(param.device)
        context_d = context.to(param.device, param.dtype)
        with torch.no_grad():
            residuals = {}
            if cond.get("control"):           # ControlNet residuals (nodes.core.conditioning / controlnet)
                from fewstep.nodes.core.controlnet import unet_residual_kwargs

                residuals = unet_residual_kwargs(cond["control"], x_in_d, t_d, context_d, added)
            extra_channels = int(self.unet.config.in_channels) - x_in_d.shape[1]
            if extra_channels > 0:            # inpainting UNets: [x_in, mask, masked-image latent]
                from fewstep.nodes.core.conditioning import inpaint_concat

                x_in_d = torch.cat([x_in_d, inpaint_concat(cond, x_in_d, extra_channels)], dim=1)
            out = self.unet(x_in_d, t_d, encoder_hidden_states=context_d, added_cond_kwargs=added,
                            **residuals).sample
        return out.to(x_in.device, x_in.dtype)


def _sd_denoiser(unet: Any, arch: str, name: str, prediction: str = "eps") -> Any:
    from fewstep.nodes.core.denoiser import Denoiser, DiscreteVPSchedule

    schedule = DiscreteVPSchedule.from_config(1000, 0.00085, 0.012, "scaled_linear")
    return Denoiser(UNetFn(unet), prediction, schedule, extras={"arch": arch, "name": name, "patches": []})


def _load_builtin(name: str) -> tuple[Any, Any, Any]:
    from fewstep.nodes.core.denoiser import Denoiser, DiscreteVPSchedule
    from fewstep.nodes.core.text import TextEncoder
    from fewstep.nodes.core.vae import VAEWrapper
    from fewstep.nodes.zoo.builtin import load_builtin, weights_dir

    device, dtype = pick_device()
    bundle = cached(weights_dir() / name, dtype, device, lambda: load_builtin(name, device, dtype))
    prediction = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}[bundle.prediction_type]
    model = Denoiser(UNetFn(bundle.unet), prediction, DiscreteVPSchedule.from_config(**bundle.schedule),
                     extras={"arch": "builtin", "name": name, "patches": []})
    return model, TextEncoder("builtin", [bundle.text_encoder]), VAEWrapper(bundle.vae, bundle.vae_scaling_factor)


def load_checkpoint(name: str, *, allow_pickle: bool | None = None) -> tuple[Any, Any, Any]:
    """(MODEL, CLIP, VAE) for a checkpoint name as listed by :func:`list_checkpoints`."""
    if name in list_builtin():
        return _load_builtin(name)
    from fewstep.app.api import current_paths

    path = current_paths().find_model("checkpoints", name)
    device, dtype = pick_device()
    return cached(path, dtype, device, lambda: _load_sd(path, dtype, device, allow_pickle))


def _load_sd(path: Path, dtype: Any, device: str, allow_pickle: bool | None) -> tuple[Any, Any, Any]:
    from fewstep.nodes.core.loaders import sd
    from fewstep.nodes.core.text import ClipTokenizer, TextEncoder
    from fewstep.nodes.core.vae import VAEWrapper

    if path.is_dir():
        parts = sd.load_diffusers_folder(path, dtype, device)
    else:
        parts = sd.load_single_file(read_state_dict(path, allow_pickle=allow_pickle, device=device), path, dtype, device)
    tokenizers = {"sd1": [ClipTokenizer()], "sd2": [ClipTokenizer(pad_id=0)], "sdxl_refiner": [ClipTokenizer(pad_id=0)]
                  }.get(parts.arch, [ClipTokenizer(), ClipTokenizer(pad_id=0)])
    scale = float(parts.vae.config.scaling_factor)
    return (_sd_denoiser(parts.unet, parts.arch, path.name, parts.prediction), TextEncoder(parts.arch, parts.text_encoders, tokenizers),
            VAEWrapper(parts.vae, scale))


def load_vae_file(name: str, *, allow_pickle: bool | None = None) -> Any:
    """VAE link value from ``vae/<name>`` (LDM layout, with or without ``first_stage_model.``)."""
    from fewstep.app.api import current_paths

    path = current_paths().find_model("vae", name)
    device, dtype = pick_device()

    def load() -> Any:
        from diffusers import AutoencoderKL

        from fewstep.nodes.core.loaders import ldm_keys as K
        from fewstep.nodes.core.loaders import sd
        from fewstep.nodes.core.vae import VAEWrapper

        state = read_state_dict(path, allow_pickle=allow_pickle, device=device)
        ldm = K.split_prefix(state, K.VAE_PREFIX) or state
        arch = "sdxl" if "sdxl" in path.name.lower() else "sd1"
        vae = sd._load_module(lambda: AutoencoderKL(**sd.vae_config(ldm, arch)), K.convert_vae(ldm), "VAE", path, dtype, device)
        return VAEWrapper(vae, sd.SCALING[arch])

    return cached(path, dtype, device, load)


def load_clip_files(names: list[str], clip_type: str, *, allow_pickle: bool | None = None) -> Any:
    """CLIP link value from ``text_encoders/<name>`` files in transformers layout (ComfyUI's clip_l.safetensors)."""
    from fewstep.app.api import current_paths

    paths = [current_paths().find_model("text_encoders", n) for n in names]
    device, dtype = pick_device()

    def load() -> Any:
        from transformers import CLIPTextConfig, CLIPTextModel

        from fewstep.nodes.core.loaders import ldm_keys as K
        from fewstep.nodes.core.loaders import sd
        from fewstep.nodes.core.text import ClipTokenizer, TextEncoder

        if clip_type != "stable_diffusion":
            raise ValueError(f"CLIPLoader: type {clip_type!r} is not supported yet (only 'stable_diffusion')")
        hf = K.convert_clip_l(read_state_dict(paths[0], allow_pickle=allow_pickle))
        model = sd._load_module(lambda: CLIPTextModel(CLIPTextConfig(**sd.clip_config(hf, "clip_l"))), hf, "CLIP-L",
                                paths[0], dtype, device)
        return TextEncoder("sd1", [model], [ClipTokenizer()])

    return cached(paths[0], dtype, device, load)


def load_unet_file(name: str, *, allow_pickle: bool | None = None) -> Any:
    """MODEL from ``diffusion_models/<name>``: an LDM-layout UNet (with or without its prefix)."""
    from fewstep.app.api import current_paths

    path = current_paths().find_model("diffusion_models", name)
    device, dtype = pick_device()

    def load() -> Any:
        from diffusers import UNet2DConditionModel

        from fewstep.nodes.core.loaders import ldm_keys as K
        from fewstep.nodes.core.loaders import sd

        state = read_state_dict(path, allow_pickle=allow_pickle, device=device)
        ldm = K.split_prefix(state, K.UNET_PREFIX) or state
        arch = "sdxl" if "label_emb.0.0.weight" in ldm else "sd1"
        unet = sd._load_module(lambda: UNet2DConditionModel(**sd.unet_config(ldm, arch)), K.convert_unet(ldm), "UNet",
                               path, dtype, device)
        return _sd_denoiser(unet, arch, path.name)

    return cached(path, dtype, device, load)
