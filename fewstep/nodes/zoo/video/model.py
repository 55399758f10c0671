"""The shipped video model as one bundle, and text-to-video generation with it.

``load_video_model()`` reads ``weights/fewstep-tiny-video.safetensors`` (+ ``.json`` config) and returns a
:class:`VideoModel`: the DiT, the built-in per-frame VAE (``fewstep-tiny-vae``, 64x64x3 <-> 16x16x4), the
MiniLM text encoder and the clip frame rate. ``VideoModel.denoiser()`` wraps the DiT as the core
``Denoiser`` (rectified flow, ``D(x, sigma, cond) -> x0``) so every sampler of
``nodes.core.video_sampling`` (and ``nodes.core.samplers``) runs it; ``generate`` is the whole
text -> clip pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from fewstep.nodes.zoo.builtin import load_vae, weights_dir
from fewstep.nodes.zoo.video import clips
from fewstep.nodes.zoo.video.dit import VideoDiT, VideoDiTConfig

VIDEO_MODEL_FILE = "fewstep-tiny-video.safetensors"
FLOW_MULTIPLIER = 1000.0  # the DiT's timestep input is sigma * 1000


class TokenEncoder(Protocol):
    """What the model needs of a text encoder: per-token states and a 0/1 mask, ``[B, L, 384]`` / ``[B, L]``."""

    def encode_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class VideoCond:
    """Conditioning of one sampling call: text tokens of the prompts (and of the negative prompts for CFG).

    context / uncond: ``[B, L, 384]`` real-token states (padded), masks ``[B, L]`` bool; ``cfg`` the
    guidance scale (1 = no guidance: uncond unused)."""

    context: torch.Tensor
    mask: torch.Tensor
    uncond: torch.Tensor | None = None
    uncond_mask: torch.Tensor | None = None
    cfg: float = 1.0


def _pad_tokens(a: torch.Tensor, ma: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    pad = length - a.shape[1]
    if pad <= 0:
        return a, ma
    return (torch.cat([a, a.new_zeros(a.shape[0], pad, a.shape[2])], 1),
            torch.cat([ma, ma.new_zeros(ma.shape[0], pad)], 1))


@dataclass
class DiTModelFn:
    """The DiT as ``model_fn(x_in [B,T,C,h,w], timestep [B], cond: VideoCond) -> velocity``.

    Classifier-free guidance (Ho & Salimans 2022) on the velocity, both branches in one batch:
    ``v = v_u + cfg (v_c - v_u)`` (x0 = x - sigma v is affine in v, so this equals CFG on x0)."""

    dit: VideoDiT

    def __call__(self, x_in: torch.Tensor, t: torch.Tensor, cond: VideoCond) -> torch.Tensor:
        p = next(self.dit.parameters())
        x, t = x_in.to(p.device, p.dtype), t.to(p.device)
        ctx, mask = cond.context.to(p.device, p.dtype), cond.mask.to(p.device)
        if cond.cfg == 1.0 or cond.uncond is None:
            with torch.no_grad():
                return self.dit(x, t, ctx, mask).to(x_in.dtype)
        length = max(ctx.shape[1], cond.uncond.shape[1])
        ctx, mask = _pad_tokens(ctx, mask, length)
        unc, umask = _pad_tokens(cond.uncond.to(p.device, p.dtype), cond.uncond_mask.to(p.device), length)
        with torch.no_grad():
            v_u, v_c = self.dit(torch.cat([x, x]), torch.cat([t, t]), torch.cat([unc, ctx]),
                                torch.cat([umask, mask])).chunk(2)
        return (v_u + cond.cfg * (v_c - v_u)).to(x_in.dtype)


def real_tokens(states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding columns beyond the longest prompt: ``[B, 77, D]`` -> ``[B, L, D]``, mask ``[B, L]`` bool."""
    length = max(int(mask.sum(1).max()), 1)
    return states[:, :length].float(), mask[:, :length].bool()


@dataclass
class VideoModel:
    """The built-in video model: DiT + per-frame VAE + text encoder (the VIDEO_MODEL link value)."""

    dit: VideoDiT
    vae: torch.nn.Module
    vae_scale: float
    text_encoder: TokenEncoder | None
    fps: int = clips.FPS
    name: str = VIDEO_MODEL_FILE
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    def to(self, device: str | torch.device) -> VideoModel:
        """Move the DiT and VAE (the model cache offloads through this); the text encoder stays put."""
        self.dit.to(device)
        self.vae.to(device)
        return self

    def denoiser(self) -> Any:
        """The DiT as a core ``Denoiser`` (flow prediction, ``FlowSchedule``; cond = :class:`VideoCond`)."""
        from fewstep.nodes.core.denoiser import Denoiser, FlowSchedule

        return Denoiser(DiTModelFn(self.dit), "flow", FlowSchedule(1.0, FLOW_MULTIPLIER),
                        extras={"arch": "fewstep-video-dit", "name": self.name})

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Real-token MiniLM states ``[B, L, 384]`` and mask ``[B, L]`` of ``prompts``."""
        if self.text_encoder is None:
            raise ValueError("VideoModel: no text encoder attached (load with a MiniLM or a token cache)")
        return real_tokens(*self.text_encoder.encode_tokens(list(prompts)))

    def cond(self, prompts: list[str], negative: list[str] | None = None, cfg: float = 1.0) -> VideoCond:
        """:class:`VideoCond` for ``prompts`` (negative prompts default to "", the training's null prompt)."""
        ctx, mask = self.encode_text(prompts)
        if cfg == 1.0:
            return VideoCond(ctx, mask)
        unc, umask = self.encode_text(negative if negative is not None else [""] * len(prompts))
        return VideoCond(ctx, mask, unc, umask, float(cfg))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``[B, T, C, h, w]`` -> frames ``[B, T, 64, 64, 3]`` float in 0..1 (CPU)."""
        b, t = latents.shape[:2]
        p = next(self.vae.parameters())
        z = latents.flatten(0, 1).to(p.device, p.dtype) / self.vae_scale
        img = self.vae.decode(z).sample.float()                                  # [B*T, 3, 64, 64] in -1..1
        return ((img + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).reshape(b, t, *img.shape[2:], 3).cpu()

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, T, 64, 64, 3]`` (uint8 or float 0..1) -> scaled latents ``[B, T, 4, 16, 16]``."""
        f = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        b, t = f.shape[:2]
        p = next(self.vae.parameters())
        x = f.flatten(0, 1).permute(0, 3, 1, 2).to(p.device, p.dtype) * 2 - 1
        z = self.vae.encode(x).latent_dist.mean.float() * self.vae_scale
        return z.reshape(b, t, *z.shape[1:])


def load_dit(path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> tuple[VideoDiT, dict]:
    """A DiT from ``path`` (safetensors) and its JSON config beside it."""
    from safetensors.torch import load_file

    cfg_path = path.with_suffix(".json")
    if not path.is_file() or not cfg_path.is_file():
        raise FileNotFoundError(f"video model: {path} or {cfg_path.name} is missing (train it with "
                                "`python -m fewstep.nodes.zoo.video.train --out DIR`)")
    info = json.loads(cfg_path.read_text())
    dit = VideoDiT(VideoDiTConfig(**info["dit"]))
    dit.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    return dit.eval().requires_grad_(False).to(device=device, dtype=dtype), info


def load_video_model(name: str = VIDEO_MODEL_FILE, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32, root: Path | None = None,
                     text_encoder: TokenEncoder | None = None, with_text: bool = True) -> VideoModel:
    """The built-in video model ``name`` from ``root`` (default: the zoo's ``weights/``); never touches a hub.

    ``text_encoder``: any :class:`TokenEncoder` (e.g. a precomputed token cache on a GPU machine); default
    the MiniLM of the installed package (lean, pure torch) when ``with_text``."""
    if not name.endswith(".safetensors") or "/" in name or "\\" in name:
        raise ValueError(f"load_video_model: {name!r} is not a file name of weights/ (*.safetensors)")
    dit, info = load_dit((root or weights_dir()) / name, device, dtype)
    vae, scale = load_vae(device, dtype, lean=True)
    if text_encoder is None and with_text:
        from fewstep.nodes.zoo.lean import load_minilm

        text_encoder = load_minilm(device=device)
    return VideoModel(dit, vae, scale, text_encoder, int(info.get("fps", clips.FPS)), name, info)


def list_video_models(root: Path | None = None) -> list[str]:
    """Shipped video model files (``fewstep-tiny-video*.safetensors`` with a JSON config of a DiT)."""
    root = root or weights_dir()
    names = []
    for p in sorted(root.glob("fewstep-tiny-video*.safetensors")):
        cfg = p.with_suffix(".json")
        if cfg.is_file() and "dit" in json.loads(cfg.read_text()):
            names.append(p.name)
    return names


@torch.no_grad()
def generate(model: VideoModel, prompts: list[str], *, frames: int = clips.FRAMES, steps: int = 50,
             shift: float = 3.0, cfg: float = 4.0, seed: int = 0, sampler: str = "flow_euler",
             negative: list[str] | None = None, sigmas: torch.Tensor | None = None,
             callback: Callable[[dict[str, Any]], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Text -> clips: returns (frames ``[B, T, 64, 64, 3]`` in 0..1, final latents ``[B, T, 4, 16, 16]``).

    Noise ``[B, T, 4, 16, 16]`` from a CPU generator seeded with ``seed`` (same clip on every device), then
    ``sampler`` of ``nodes.core.video_sampling`` over ``sigmas`` (default ``shifted_sigmas(steps, shift)``)."""
    from fewstep.nodes.core.threads import tiny_cpu_work
    from fewstep.nodes.core.video_sampling import get_video_sampler, shifted_sigmas

    cfg_dit = model.dit.config
    if not 1 <= frames <= cfg_dit.max_frames:
        raise ValueError(f"frames must be in 1..{cfg_dit.max_frames} for this model, got {frames}")
    sigmas = shifted_sigmas(steps, shift) if sigmas is None else sigmas
    gen = torch.Generator().manual_seed(int(seed))
    shape = (len(prompts), frames, cfg_dit.latent_channels, cfg_dit.latent_size, cfg_dit.latent_size)
    x = torch.randn(shape, generator=gen).to(model.device)
    sample = get_video_sampler(sampler)
    cond = model.cond(prompts, negative, cfg)
    # One torch thread on the CPU (core's tiny-work policy): 20 steps of one clip took 0.7 s on 1 thread and
    # 2.6-16.7 s on 2 (cpu-demo DiT; tiny DiT 2.2 s vs 8.5-10 s) on the shared 2-core machine, 2026-12-07
    with tiny_cpu_work(model.device, 0):
        latents = sample(model.denoiser(), x, sigmas.to(model.device), cond=cond, callback=callback,
                         generator=torch.Generator(model.device).manual_seed(int(seed) + 1))
        return model.decode(latents), latents


def text_to_video(model: VideoModel, prompt: str, negative_prompt: str = "", *, frames: int = clips.FRAMES,
                  steps: int = 50, shift: float = 3.0, cfg: float = 4.0, sampler: str = "flow_euler", seed: int = 0,
                  callback: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """One clip for ``prompt`` as a core ``Video`` (frames ``[T, 64, 64, 3]``, the model's fps, metadata
    ``description`` = the prompt and ``comment`` = the sampler settings)."""
    from fewstep.nodes.core.video_nodes import prompt_video, require_prompt

    require_prompt(prompt, "text_to_video")
    if steps < 1:
        raise ValueError(f"text_to_video: steps must be >= 1, got {steps}")
    out, _ = generate(model, [prompt], frames=frames, steps=steps, shift=shift, cfg=cfg, seed=seed, sampler=sampler,
                      negative=[negative_prompt], callback=callback)
    settings = f"{model.name}: {sampler}, {steps} steps, shift {shift:g}, cfg {cfg:g}, seed {seed}"
    return prompt_video(out, model.fps, prompt, settings)
