"""Core nodes with ComfyUI's class names, input names and order, and output types.

Thin adapters over the library (``loaders``, ``schedules``, ``samplers``, ``guidance``, ``sampling``,
``image_io``). torch and the model libraries are imported inside ``execute`` so listing nodes stays fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fewstep.app.api import (
    Boolean,
    Combo,
    Float,
    Hidden,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    Schema,
    String,
    current_paths,
    max_image_pixels,
    open_image,
    safe_child,
)
from fewstep.nodes.core.names import MAX_RESOLUTION, SAMPLER_NAMES, SCHEDULER_NAMES, UPSCALE_METHODS

SEED_MAX = 0xFFFFFFFFFFFFFFFF
INT_MAX = 2**63 - 1


def _cfg(name: str = "cfg") -> Any:
    return Float(name, 8.0, min=0.0, max=100.0, step=0.1, round=0.01)


def _checkpoints() -> list[str]:
    from fewstep.nodes.core.loaders import list_checkpoints

    return list_checkpoints()


def _files(folder: str) -> Any:
    def choices() -> list[str]:
        from fewstep.nodes.core.loaders.files import WEIGHT_SUFFIXES

        return current_paths().list_models(folder, WEIGHT_SUFFIXES)
    return choices


# ------------------------------------------------------------------------------------------ loaders


class CheckpointLoaderSimple(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="CheckpointLoaderSimple", display_name="Load Checkpoint", category="loaders",
                      description="Loads a diffusion checkpoint (built-in, SD1.x / SDXL single file or diffusers folder).",
                      inputs=[Combo("ckpt_name", _checkpoints, tooltip="checkpoints/ of the models folders")],
                      outputs=[Output("MODEL", "MODEL"), Output("CLIP", "CLIP"), Output("VAE", "VAE")])

    @classmethod
    def execute(cls, ckpt_name: str) -> NodeOutput:
        from fewstep.nodes.core.loaders import load_checkpoint

        return NodeOutput(*load_checkpoint(ckpt_name))


class VAELoader(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VAELoader", display_name="Load VAE", category="loaders",
                      inputs=[Combo("vae_name", _files("vae"))], outputs=[Output("VAE", "VAE")])

    @classmethod
    def execute(cls, vae_name: str) -> NodeOutput:
        from fewstep.nodes.core.loaders import load_vae_file

        return NodeOutput(load_vae_file(vae_name))


class CLIPLoader(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="CLIPLoader", display_name="Load CLIP", category="advanced/loaders",
                      inputs=[Combo("clip_name", _files("text_encoders")), Combo("type", ["stable_diffusion"]),
                              Combo("device", ["default", "cpu"], optional=True)],
                      outputs=[Output("CLIP", "CLIP")])

    @classmethod
    def execute(cls, clip_name: str, type: str, device: str = "default") -> NodeOutput:
        from fewstep.nodes.core.loaders import load_clip_files

        return NodeOutput(load_clip_files([clip_name], type))


class UNETLoader(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="UNETLoader", display_name="Load Diffusion Model", category="advanced/loaders",
                      inputs=[Combo("unet_name", _files("diffusion_models")),
                              Combo("weight_dtype", ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"])],
                      outputs=[Output("MODEL", "MODEL")])

    @classmethod
    def execute(cls, unet_name: str, weight_dtype: str) -> NodeOutput:
        from fewstep.nodes.core.loaders import load_unet_file

        if weight_dtype != "default":
            raise ValueError(f"UNETLoader: weight_dtype {weight_dtype!r} is not supported yet; use 'default'")
        return NodeOutput(load_unet_file(unet_name))


def _lora(model: Any, clip: Any, lora_name: str, strength_model: float, strength_clip: float) -> tuple[Any, Any]:
    from fewstep.nodes.core.loaders.files import read_state_dict
    from fewstep.nodes.core.loaders.lora import lora_patches

    path = current_paths().find_model("loras", lora_name)
    state = read_state_dict(path)
    targets = {"unet": model.model_fn.unet}
    if clip is not None and clip.kind != "builtin":
        targets.update({f"te{i}": enc for i, enc in enumerate(clip.encoders)})
    strengths = {"unet": strength_model, "te0": strength_clip, "te1": strength_clip}
    patches, matched = lora_patches(state, targets, strengths, source=str(path))
    if not matched:
        raise ValueError(f"{path}: no LoRA module matched this model (unknown key style or architecture)")
    unet_p = [p for p in patches if p.module in set(targets["unet"].modules())]
    new_model = model.clone(extras={**model.extras, "patches": model.extras.get("patches", []) + unet_p})
    if clip is None:
        return new_model, None
    te_p = [p for p in patches if p not in unet_p]
    return new_model, dataclasses.replace(clip, patches=clip.patches + te_p)


class LoraLoader(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="LoraLoader", display_name="Load LoRA", category="loaders",
                      inputs=[Link("model", "MODEL"), Link("clip", "CLIP"), Combo("lora_name", _files("loras")),
                              Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01),
                              Float("strength_clip", 1.0, min=-100.0, max=100.0, step=0.01)],
                      outputs=[Output("MODEL", "MODEL"), Output("CLIP", "CLIP")])

    @classmethod
    def execute(cls, model: Any, clip: Any, lora_name: str, strength_model: float,
                strength_clip: float) -> NodeOutput:
        return NodeOutput(*_lora(model, clip, lora_name, strength_model, strength_clip))


class LoraLoaderModelOnly(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="LoraLoaderModelOnly", display_name="LoraLoaderModelOnly", category="loaders",
                      inputs=[Link("model", "MODEL"), Combo("lora_name", _files("loras")),
                              Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01)],
                      outputs=[Output("MODEL", "MODEL")])

    @classmethod
    def execute(cls, model: Any, lora_name: str, strength_model: float) -> NodeOutput:
        return NodeOutput(_lora(model, None, lora_name, strength_model, 0.0)[0])


# ------------------------------------------------------------------------------------------ conditioning


class CLIPTextEncode(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="CLIPTextEncode", display_name="CLIP Text Encode (Prompt)", category="conditioning",
                      inputs=[String("text", multiline=True, extra={"dynamicPrompts": True}), Link("clip", "CLIP")],
                      outputs=[Output("CONDITIONING", "CONDITIONING")])

    @classmethod
    def execute(cls, text: str, clip: Any) -> NodeOutput:
        if clip is None:
            raise ValueError("CLIPTextEncode: the clip input is None (a checkpoint without a text encoder?)")
        return NodeOutput(clip.encode(text))


class ConditioningZeroOut(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ConditioningZeroOut", category="advanced/conditioning",
                      inputs=[Link("conditioning", "CONDITIONING")], outputs=[Output("CONDITIONING", "CONDITIONING")])

    @classmethod
    def execute(cls, conditioning: list[list[Any]]) -> NodeOutput:
        import torch

        out = []
        for states, extra in conditioning:
            extra = dict(extra)
            if extra.get("pooled_output") is not None:
                extra["pooled_output"] = torch.zeros_like(extra["pooled_output"])
            out.append([torch.zeros_like(states), extra])
        return NodeOutput(out)


# ------------------------------------------------------------------------------------------ latents and sampling


class EmptyLatentImage(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="EmptyLatentImage", display_name="Empty Latent Image", category="latent",
                      description="An empty latent of width/8 x height/8 (ComfyUI's rule for SD1.5 / SDXL). "
                                  "The built-in tiny model's VAE upscales latents by 4, not 8, so it decodes "
                                  "them to half the size asked: 128 x 128 gives a 64 x 64 image, its native size.",
                      inputs=[Int("width", 512, min=16, max=MAX_RESOLUTION, step=8),
                              Int("height", 512, min=16, max=MAX_RESOLUTION, step=8),
                              Int("batch_size", 1, min=1, max=4096)],
                      outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, width: int, height: int, batch_size: int = 1) -> NodeOutput:
        import torch

        # ComfyUI's rule: 4 channels at 1/8 of width x height (SD1.5 / SDXL). The built-in VAE downsamples by
        # 4 only, so 128 x 128 here gives its native 16 x 16 latents, decoded to 64 x 64 pixels.
        return NodeOutput({"samples": torch.zeros(batch_size, 4, height // 8, width // 8), "downscale_ratio": 8})

    @classmethod
    def validate_inputs(cls, width: int, height: int) -> bool | str:
        """The schema's ranges (named inputs skip them) and the pixel budget: 16384 x 16384 passed
        validation and then held the worker for 9+ minutes inside one matrix multiply, deaf to /interrupt."""
        for name, value in (("width", width), ("height", height)):
            if not 16 <= value <= MAX_RESOLUTION:
                return f"{name} {value} is outside 16..{MAX_RESOLUTION}"
        if width * height > max_image_pixels():
            return (f"{width}x{height} is over the limit of {max_image_pixels():,} pixels per image "
                    "(FEWSTEP_MAX_IMAGE_PIXELS)")
        return True


def _sampling_inputs() -> list[Any]:
    return [Combo("sampler_name", list(SAMPLER_NAMES)), Combo("scheduler", list(SCHEDULER_NAMES)),
            Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"), Link("latent_image", "LATENT")]


class KSampler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="KSampler", category="sampling",
                      description="Denoises a latent with a sampler, scheduler and classifier-free guidance.",
                      inputs=[Link("model", "MODEL"),
                              Int("seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
                              Int("steps", 20, min=1, max=10000), _cfg(), *_sampling_inputs(),
                              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)],
                      outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                positive: Any, negative: Any, latent_image: dict, denoise: float = 1.0) -> NodeOutput:
        from fewstep.nodes.core import sampling
        from fewstep.nodes.core.samplers import get_sampler
        from fewstep.nodes.core.schedules import calculate_sigmas

        sigmas = calculate_sigmas(model.schedule, scheduler, steps, denoise)
        guider = sampling.GuiderSpec(model, positive, negative, cfg)
        out, _ = sampling.run(guider, get_sampler(sampler_name), sigmas, latent_image, sampling.RandomNoiseSpec(seed))
        return NodeOutput(out)


class KSamplerAdvanced(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="KSamplerAdvanced", display_name="KSampler (Advanced)", category="sampling",
                      inputs=[Link("model", "MODEL"), Combo("add_noise", ["enable", "disable"]),
                              Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
                              Int("steps", 20, min=1, max=10000), _cfg(), *_sampling_inputs(),
                              Int("start_at_step", 0, min=0, max=10000), Int("end_at_step", 10000, min=0, max=10000),
                              Combo("return_with_leftover_noise", ["disable", "enable"])],
                      outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, model: Any, add_noise: str, noise_seed: int, steps: int, cfg: float, sampler_name: str,
                scheduler: str, positive: Any, negative: Any, latent_image: dict, start_at_step: int,
                end_at_step: int, return_with_leftover_noise: str) -> NodeOutput:
        from fewstep.nodes.core import sampling
        from fewstep.nodes.core.samplers import get_sampler
        from fewstep.nodes.core.schedules import calculate_sigmas

        sigmas = calculate_sigmas(model.schedule, scheduler, steps)[start_at_step:end_at_step + 1].clone()
        if return_with_leftover_noise == "disable" and len(sigmas) > 1:
            sigmas[-1] = 0.0                     # ComfyUI's force_full_denoise
        noise = sampling.RandomNoiseSpec(noise_seed) if add_noise == "enable" else sampling.DisableNoise(noise_seed)
        guider = sampling.GuiderSpec(model, positive, negative, cfg)
        return NodeOutput(sampling.run(guider, get_sampler(sampler_name), sigmas, latent_image, noise)[0])


class SamplerCustomAdvanced(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerCustomAdvanced", category="sampling/custom_sampling",
                      inputs=[Link("noise", "NOISE"), Link("guider", "GUIDER"), Link("sampler", "SAMPLER"),
                              Link("sigmas", "SIGMAS"), Link("latent_image", "LATENT")],
                      outputs=[Output("output", "LATENT"), Output("denoised_output", "LATENT")])

    @classmethod
    def execute(cls, noise: Any, guider: Any, sampler: Any, sigmas: Any, latent_image: dict) -> NodeOutput:
        from fewstep.nodes.core import sampling

        return NodeOutput(*sampling.run(guider, sampler, sigmas, latent_image, noise))


class KSamplerSelect(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="KSamplerSelect", category="sampling/custom_sampling/samplers",
                      inputs=[Combo("sampler_name", list(SAMPLER_NAMES))], outputs=[Output("SAMPLER", "SAMPLER")])

    @classmethod
    def execute(cls, sampler_name: str) -> NodeOutput:
        from fewstep.nodes.core.samplers import get_sampler

        return NodeOutput(get_sampler(sampler_name))


class BasicScheduler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="BasicScheduler", category="sampling/custom_sampling/schedulers",
                      inputs=[Link("model", "MODEL"), Combo("scheduler", list(SCHEDULER_NAMES)),
                              Int("steps", 20, min=1, max=10000), Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)],
                      outputs=[Output("SIGMAS", "SIGMAS")])

    @classmethod
    def execute(cls, model: Any, scheduler: str, steps: int, denoise: float) -> NodeOutput:
        from fewstep.nodes.core.schedules import calculate_sigmas

        return NodeOutput(calculate_sigmas(model.schedule, scheduler, steps, denoise))


class RandomNoise(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="RandomNoise", category="sampling/custom_sampling/noise",
                      inputs=[Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True)],
                      outputs=[Output("NOISE", "NOISE")])

    @classmethod
    def execute(cls, noise_seed: int) -> NodeOutput:
        from fewstep.nodes.core.sampling import RandomNoiseSpec

        return NodeOutput(RandomNoiseSpec(noise_seed))


class CFGGuider(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="CFGGuider", category="sampling/custom_sampling/guiders",
                      inputs=[Link("model", "MODEL"), Link("positive", "CONDITIONING"),
                              Link("negative", "CONDITIONING"), _cfg()],
                      outputs=[Output("GUIDER", "GUIDER")])

    @classmethod
    def execute(cls, model: Any, positive: Any, negative: Any, cfg: float) -> NodeOutput:
        from fewstep.nodes.core.sampling import GuiderSpec

        return NodeOutput(GuiderSpec(model, positive, negative, cfg))


class BasicGuider(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="BasicGuider", category="sampling/custom_sampling/guiders",
                      inputs=[Link("model", "MODEL"), Link("conditioning", "CONDITIONING")],
                      outputs=[Output("GUIDER", "GUIDER")])

    @classmethod
    def execute(cls, model: Any, conditioning: Any) -> NodeOutput:
        from fewstep.nodes.core.sampling import GuiderSpec

        return NodeOutput(GuiderSpec(model, conditioning))


# ------------------------------------------------------------------------------------------ VAE and images


class VAEDecode(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VAEDecode", display_name="VAE Decode", category="latent",
                      inputs=[Link("samples", "LATENT"), Link("vae", "VAE")], outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, samples: dict, vae: Any) -> NodeOutput:
        return NodeOutput(vae.decode(samples["samples"]))


class VAEEncode(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VAEEncode", display_name="VAE Encode", category="latent",
                      inputs=[Link("pixels", "IMAGE"), Link("vae", "VAE")], outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, pixels: Any, vae: Any) -> NodeOutput:
        return NodeOutput({"samples": vae.encode(pixels)})


def _to_uint8(images: Any) -> list[Any]:
    import numpy as np

    # Truncation, as ComfyUI's SaveImage (``np.clip(255. * i, 0, 255).astype(np.uint8)``): 0.25 -> 63, so
    # a graph saves byte-identical files here and in ComfyUI.
    return [np.clip(255.0 * img.detach().float().cpu().numpy(), 0, 255).astype(np.uint8) for img in images]


def _save(images: Any, folder_dir: Any, prefix: str, kind: str, prompt: Any, extra: Any) -> dict[str, list]:
    from fewstep.nodes.core.image_io import (
        claim_output_names,
        next_output_path,
        png_text,
        save_png,
        substitute_prefix,
    )

    if len(images):  # %width% / %height% are the first image's ([B,H,W,C]), as in ComfyUI
        prefix = substitute_prefix(prefix, int(images[0].shape[1]), int(images[0].shape[0]), prompt)
    folder, name, subfolder, counter = next_output_path(folder_dir, prefix)

    def filenames(first: int) -> list[str]:
        return [f"{name}_{first + offset:05}_.png" for offset in range(len(images))]

    arrays = _to_uint8(images)
    counter = claim_output_names(folder, counter, filenames)
    text = png_text(prompt, extra)
    results = []
    for filename, array in zip(filenames(counter), arrays, strict=True):   # encoded in the background
        save_png(array, folder / filename, text)
        results.append({"filename": filename, "subfolder": subfolder, "type": kind})
    return {"images": results}


class SaveImage(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SaveImage", display_name="Save Image", category="image", is_output_node=True,
                      description="Saves PNGs under output/, with the graph embedded in the PNG text chunks.",
                      inputs=[Link("images", "IMAGE"), String("filename_prefix", "ComfyUI")],
                      hidden=[Hidden.PROMPT, Hidden.EXTRA_PNGINFO], outputs=[])

    @classmethod
    def execute(cls, images: Any, filename_prefix: str = "ComfyUI", prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeOutput:
        paths = current_paths()
        return NodeOutput(ui=_save(images, paths.output_dir, filename_prefix, "output", prompt, extra_pnginfo))


class PreviewImage(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="PreviewImage", display_name="Preview Image", category="image", is_output_node=True,
                      inputs=[Link("images", "IMAGE")], hidden=[Hidden.PROMPT, Hidden.EXTRA_PNGINFO], outputs=[])

    @classmethod
    def execute(cls, images: Any, prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        import secrets

        prefix = "ComfyUI_temp_" + "".join(secrets.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        return NodeOutput(ui=_save(images, current_paths().temp_dir, prefix, "temp", prompt, extra_pnginfo))


def _input_images() -> list[str]:
    folder = current_paths().input_dir
    if not folder.is_dir():
        return []
    suffixes = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
    root = folder.resolve()
    # a symlink to a file outside input/ is neither listed nor loaded (see _input_file)
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in suffixes and p.resolve().is_relative_to(root))


_ANNOTATED_FOLDERS = ("input", "output", "temp")


def _input_file(image: str) -> Path:
    """The file an editor image name points at, refusing names and symlinks that lead out of its folder
    (FileNotFoundError, which names only the image: the server's folders stay private).

    Names as the editor produces them (ComfyUI ``folder_paths.py::get_annotated_filepath``): ``x.png`` and
    ``pasted/x.png`` are in input/; a `` [input]``, `` [output]`` or `` [temp]`` suffix names the folder
    (``clipspace/clipspace-mask-1.png [input]`` from the mask editor, ``ComfyUI_00001_.png [output]``)."""
    paths = current_paths()
    name, folder = image, paths.input_dir
    for kind in _ANNOTATED_FOLDERS:
        if image.endswith(f" [{kind}]"):
            name, folder = image[: -len(kind) - 3], getattr(paths, f"{kind}_dir")
            break
    try:
        path = safe_child(folder, name, "image")
    except ValueError as exc:
        raise FileNotFoundError(f"LoadImage: {exc}") from None
    if not path.is_file():
        raise FileNotFoundError(f"LoadImage: {image!r} not found")
    return path


class LoadImage(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="LoadImage", display_name="Load Image", category="image",
                      inputs=[Combo("image", _input_images, extra={"image_upload": True})],
                      outputs=[Output("IMAGE", "IMAGE"), Output("MASK", "MASK")])

    @classmethod
    def execute(cls, image: str) -> NodeOutput:
        import numpy as np
        import torch
        from PIL import ImageOps

        path = _input_file(image)
        with open_image(path) as img:   # refuses decompression bombs before decoding
            img = ImageOps.exif_transpose(img)
            rgb = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]
            if "A" in img.getbands():
                mask = 1.0 - torch.from_numpy(np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0)[None]
            else:
                mask = torch.zeros(1, 64, 64)
        return NodeOutput(rgb, mask)

    @classmethod
    def validate_inputs(cls, image: str) -> bool | str:
        """Any existing image the editor can name, listed or not (pasted, mask-edited, outputs), as
        ComfyUI's ``LoadImage.VALIDATE_INPUTS`` (which replaces the list check)."""
        try:
            _input_file(image)
        except FileNotFoundError:
            return f"Invalid image file: {image}"
        return True

    @classmethod
    def fingerprint_inputs(cls, image: str) -> str:
        import hashlib

        try:
            return hashlib.sha256(_input_file(image).read_bytes()).hexdigest()
        except FileNotFoundError:
            return image


class ImageScale(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ImageScale", display_name="Upscale Image", category="image/upscaling",
                      inputs=[Link("image", "IMAGE"), Combo("upscale_method", list(UPSCALE_METHODS)),
                              Int("width", 512, min=0, max=MAX_RESOLUTION, step=1),
                              Int("height", 512, min=0, max=MAX_RESOLUTION, step=1),
                              Combo("crop", ["disabled", "center"])],
                      outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, image: Any, upscale_method: str, width: int, height: int, crop: str) -> NodeOutput:
        from fewstep.nodes.core.imaging import scale_images

        return NodeOutput(scale_images(image, upscale_method, width, height, crop))


# ------------------------------------------------------------------------------------------ primitives


class PrimitiveInt(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="PrimitiveInt", display_name="Int", category="utils/primitive",
                      inputs=[Int("value", 0, min=-INT_MAX, max=INT_MAX, control_after_generate=True)],
                      outputs=[Output("INT", "INT")])

    @classmethod
    def execute(cls, value: int) -> NodeOutput:
        return NodeOutput(value)


class PrimitiveFloat(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="PrimitiveFloat", display_name="Float", category="utils/primitive",
                      inputs=[Float("value", 0.0, min=-INT_MAX, max=INT_MAX)], outputs=[Output("FLOAT", "FLOAT")])

    @classmethod
    def execute(cls, value: float) -> NodeOutput:
        return NodeOutput(value)


class PrimitiveString(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="PrimitiveString", display_name="String", category="utils/primitive",
                      inputs=[String("value")], outputs=[Output("STRING", "STRING")])

    @classmethod
    def execute(cls, value: str) -> NodeOutput:
        return NodeOutput(value)


class PrimitiveBoolean(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="PrimitiveBoolean", display_name="Boolean", category="utils/primitive",
                      inputs=[Boolean("value")], outputs=[Output("BOOLEAN", "BOOLEAN")])

    @classmethod
    def execute(cls, value: bool) -> NodeOutput:
        return NodeOutput(value)


NODES: tuple[type[Node], ...] = (
    CheckpointLoaderSimple, VAELoader, CLIPLoader, UNETLoader, LoraLoader, LoraLoaderModelOnly, CLIPTextEncode,
    ConditioningZeroOut, EmptyLatentImage, KSampler, KSamplerAdvanced, SamplerCustomAdvanced, KSamplerSelect,
    BasicScheduler, RandomNoise, CFGGuider, BasicGuider, VAEDecode, VAEEncode, LoadImage, SaveImage,
    PreviewImage, ImageScale, PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveBoolean,
)
