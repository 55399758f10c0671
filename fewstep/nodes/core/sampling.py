"""Glue between the link types and the sampling library: conditioning -> model cond, noise, one run.

Noise follows ComfyUI's convention so seeds reproduce: a CPU ``torch.Generator`` seeded with the seed,
``torch.randn(latent.shape)`` on the CPU, then moved to the model's device.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from fewstep.nodes.core import fastpath
from fewstep.nodes.core.denoiser import Denoiser
from fewstep.nodes.core.guidance import BasicGuider, CFGGuider
from fewstep.nodes.core.interrupts import checks_between_modules
from fewstep.nodes.core.loaders.lora import applied
from fewstep.nodes.core.samplers import SamplerSpec
from fewstep.nodes.core.threads import tiny_cpu_work


def model_cond(conditioning: list[list[Any]] | None, latent: torch.Tensor, arch: str,
               negative: bool = False) -> dict[str, Any] | None:
    """CONDITIONING -> the model cond dict of ``UNetFn``. Only the first entry is used (area / multi-entry
    conditioning is not supported). SDXL gets ``time_ids`` = (orig h, orig w, crop top, crop left, target h,
    target w) (Podell et al. 2023, SDXL Sec. 2.2), defaulting to the image size."""
    if conditioning is None:
        return None
    if not conditioning:
        raise ValueError("empty CONDITIONING")
    states, extra = conditioning[0][0], conditioning[0][1]
    cond: dict[str, Any] = {"context": states}
    for key in ("concat_mask", "concat_latent_image"):      # InpaintModelConditioning, for 9-channel UNets
        if extra.get(key) is not None:
            cond[key] = extra[key]
    if arch == "sdxl":
        h, w = latent.shape[-2] * 8, latent.shape[-1] * 8
        ids = [extra.get("height", h), extra.get("width", w), extra.get("crop_h", 0), extra.get("crop_w", 0),
               extra.get("target_height", h), extra.get("target_width", w)]
        cond.update(pooled=extra["pooled_output"], time_ids=torch.tensor([ids], dtype=torch.float32))
    elif arch == "sdxl_refiner":
        # the refiner's 5 numbers: size, crop and an aesthetic score (Podell et al. 2023, Sec. 2.5), by
        # default 6 for the prompt and 2.5 for the negative prompt (ComfyUI's defaults)
        h, w = latent.shape[-2] * 8, latent.shape[-1] * 8
        score = extra.get("aesthetic_score", 2.5 if negative or extra.get("prompt_type") == "negative" else 6.0)
        ids = [extra.get("height", h), extra.get("width", w), extra.get("crop_h", 0), extra.get("crop_w", 0), score]
        cond.update(pooled=extra["pooled_output"], time_ids=torch.tensor([ids], dtype=torch.float32))
    return cond


@dataclass(frozen=True)
class RandomNoiseSpec:
    """The NOISE link value (ComfyUI's RandomNoise)."""

    seed: int

    def generate(self, latent: dict[str, Any]) -> torch.Tensor:
        samples = latent["samples"]
        generator = torch.Generator(device="cpu").manual_seed(int(self.seed))
        indices = latent.get("batch_index")
        if indices is None:
            return torch.randn(samples.shape, generator=generator, dtype=torch.float32, device="cpu")
        # items picked out of a batch (LatentFromBatch) get the noise they had in it: draw one item at a
        # time up to the largest index and keep the picked ones (ComfyUI's prepare_noise)
        draws = [torch.randn((1, *samples.shape[1:]), generator=generator, dtype=torch.float32)
                 for _ in range(max(indices) + 1)]
        return torch.cat([draws[i] for i in indices])


@dataclass(frozen=True)
class DisableNoise:
    """NOISE that is all zeros (KSamplerAdvanced add_noise=disable)."""

    seed: int = 0

    def generate(self, latent: dict[str, Any]) -> torch.Tensor:
        return torch.zeros(latent["samples"].shape, dtype=torch.float32)


@dataclass(frozen=True)
class GuiderSpec:
    """The GUIDER link value: a MODEL with its CONDITIONING and CFG scale; built per latent shape."""

    model: Denoiser
    positive: list[list[Any]]
    negative: list[list[Any]] | None = None
    cfg: float = 1.0

    def build(self, latent: torch.Tensor) -> Any:
        from fewstep.nodes.core.conditioning import ComposedGuider, is_rich

        patched = "rescale_cfg" in self.model.extras or "apg" in self.model.extras
        if is_rich(self.positive) or is_rich(self.negative) or patched:
            return ComposedGuider(self.model, self.positive, self.negative, self.cfg, latent)
        arch = self.model.extras.get("arch", "sd1")
        pos = model_cond(self.positive, latent, arch)
        if self.negative is None:
            return BasicGuider(self.model, pos)
        return CFGGuider(self.model, pos, model_cond(self.negative, latent, arch, negative=True), self.cfg)


def progress_callback(total: int) -> Any:
    """Sampler callback reporting ``i + 1 / total`` to the running job (which raises on interrupt)."""
    from fewstep.app.api import current_context

    context = current_context()

    def callback(info: dict[str, Any]) -> None:
        if context is not None:
            context.progress(info["i"] + 1, total, None)

    return callback


def run(guider: GuiderSpec, sampler: SamplerSpec, sigmas: torch.Tensor, latent: dict[str, Any],
        noise: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sample; returns (LATENT output, LATENT of the last x0 prediction). Empty sigmas return the input."""
    samples = latent["samples"].float()
    if len(sigmas) < 2:
        return dict(latent), dict(latent)
    model = guider.model
    max_denoise = float(sigmas[0]) >= model.schedule.sigma_max * (1 - 1e-5)
    x = model.noise_latent(samples, noise.generate(latent), float(sigmas[0]), max_denoise=max_denoise)
    last: dict[str, torch.Tensor] = {}
    report = progress_callback(len(sigmas) - 1)

    def callback(info: dict[str, Any]) -> None:
        last["x0"] = info["denoised"]
        report(info)

    generator = torch.Generator(device="cpu").manual_seed(int(getattr(noise, "seed", 0)))
    unet = getattr(model.model_fn, "unet", None)
    device = next(unet.parameters()).device if unet is not None else samples.device
    built = with_inpaint_defaults(guider, latent).build(samples)
    if latent.get("noise_mask") is not None:         # inpainting: regenerate only where the mask is 1
        from fewstep.nodes.core.conditioning import InpaintGuider

        built = InpaintGuider(built, model, samples, noise.generate(latent), latent["noise_mask"])
    checks = checks_between_modules() if torch.device(device).type == "cpu" else contextlib.nullcontext()
    with applied(model.extras.get("patches", [])), tiny_cpu_work(device, samples[0].numel()), checks:
        # CUDA: the fast path (graph-replayed guider call, no syncs in the loop); elsewhere exactly sampler(...)
        out = fastpath.sample(sampler, built, x, sigmas.float(), callback=callback, generator=generator)
    return {**latent, "samples": out.float().cpu()}, {**latent, "samples": last.get("x0", out).float().cpu()}


def add_noise(model: Denoiser, noise: Any, sigmas: torch.Tensor, latent: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's AddNoise: the latent noised to ``scale`` = |sigmas[0] - sigmas[-1]| (sigmas[0] for a single
    value) by the model's forward process, ``alpha(scale) latent + scale noise`` (``Denoiser.noise_latent``;
    latent + scale noise for VP/EDM models, (1 - scale) latent + scale noise for flow models). NaN and
    infinities become 0; empty sigmas return the latent unchanged."""
    if len(sigmas) == 0:
        return latent
    samples = latent["samples"].float()
    scale = float((sigmas[0] - sigmas[-1]).abs()) if len(sigmas) > 1 else float(sigmas[0])
    noisy = model.noise_latent(samples, noise.generate(latent).to(samples.device), scale)
    return {**latent, "samples": torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)}


def with_inpaint_defaults(guider: Any, latent: dict[str, Any]) -> Any:
    """The GUIDER with ComfyUI's ``concat_cond`` defaults for inpainting UNets (extra input channels) when the
    latent has a noise mask: entries without InpaintModelConditioning's ``concat_mask`` take the noise mask,
    those without ``concat_latent_image`` the input latent (VAEEncodeForInpaint's grey-filled image). Other
    models and latents without a mask get the guider unchanged."""
    mask, samples = latent.get("noise_mask"), latent["samples"]
    unet = getattr(guider.model.model_fn, "unet", None)
    channels = getattr(getattr(unet, "config", None), "in_channels", None)
    if mask is None or channels is None or int(channels) <= samples.shape[1] or not dataclasses.is_dataclass(guider):
        return guider

    def fill(conditioning: list[list[Any]] | None) -> list[list[Any]] | None:
        if conditioning is None:
            return None
        return [[c, {**e, "concat_mask": e.get("concat_mask", mask),
                     "concat_latent_image": e.get("concat_latent_image", samples)}] for c, e in conditioning]

    names = [f.name for f in dataclasses.fields(guider) if f.name in ("positive", "negative", "cond1", "cond2")]
    return dataclasses.replace(guider, **{name: fill(getattr(guider, name)) for name in names})
