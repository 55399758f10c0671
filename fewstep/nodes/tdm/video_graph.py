"""What the video TDM nodes do, as plain functions: the run folder, training, previews, sampling, shipped students.

The student travels as a VIDEO_MODEL (``nodes.zoo.video.model.VideoModel``): the teacher's VAE, text encoder and
frame rate around the student DiT, with ``info["tdm"] = {student_steps, shift, top}`` so the sampler node
uses the student's own σ's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fewstep.nodes.core.train.distill_graph import run_folder as core_run_folder
from fewstep.nodes.core.train.flow_param import FlowNet
from fewstep.nodes.core.train.loop import Checkpointer
from fewstep.nodes.core.train.prompts import PromptPool
from fewstep.nodes.tdm.flow import flow_student_sigmas, student_sigma_schedule
from fewstep.nodes.tdm.train import build_run, distill_tdm, student_view
from fewstep.nodes.tdm.video import (
    TDMVideoConfig,
    VideoFlowNet,
    load_video_student,
    student_schedule,
    student_video_model,
    trainable_copy,
    video_prompt_pool,
)
from fewstep.nodes.zoo.video import clips
from fewstep.nodes.zoo.video.model import VideoModel

PROMPT_SOURCES = ("captions", "list")


def video_prompts(source: str, text: str) -> list[str]:
    """Training prompts: the built-in clips' training captions (held-out ones excluded), or one per line."""
    if source == "captions":
        return clips.split_captions("train")
    if source == "list":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
        if not prompts:
            raise ValueError("prompt_source 'list' needs at least one prompt line")
        return prompts
    raise ValueError(f"prompt_source must be one of {PROMPT_SOURCES}, got {source!r}")


def run_folder(run_name: str, cfg: TDMVideoConfig, model: VideoModel, prompts: list[str]) -> Path:
    """``<models>/checkpoints/distill/<run>-<hash>``: config, teacher and prompts in the hash (same → resume)."""
    return core_run_folder(run_name, ["tdm-video", cfg.fingerprint(), model.name, *prompts])


def preview_fn(view_of: Callable[[], FlowNet], model: VideoModel, pool: PromptPool, cfg: TDMVideoConfig
               ) -> Callable[[int], Any]:
    """The K-step clip of the first prompt as one strip of its frames (PIL), for the editor's live preview."""
    def make(step: int) -> Any:
        from PIL import Image

        from fewstep.nodes.core.video_sampling import sample_flow_euler

        gen = torch.Generator().manual_seed(0)
        noise = torch.randn((1, *pool.latent_shape), generator=gen).to(model.device)
        sigmas = student_sigma_schedule(cfg.student_steps, cfg.shift, cfg.top).to(model.device)
        view = view_of()
        with torch.no_grad():
            latents = sample_flow_euler(_denoiser(view), noise, sigmas, cond=pool.cond[:1])
        frames = model.decode(latents)[0]                                         # [T, 64, 64, 3]
        strip = frames.permute(1, 0, 2, 3).reshape(frames.shape[1], -1, 3)        # [64, T*64, 3]
        return Image.fromarray((strip * 255).round().byte().numpy())
    return make


def _denoiser(view: FlowNet) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """A FlowNet as the samplers' ``D(x, σ, cond) -> x̂0`` (σ a scalar tensor)."""
    def d(x: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        x0, _ = view.x0_eps(x, sigma.reshape(1).expand(x.shape[0]).to(x.device), cond)
        return x0
    return d


def train_tdm_video_student(model: VideoModel, cfg: TDMVideoConfig, *, prompts: list[str], run_name: str,
                            checkpoint_every: int, preview_every: int = 0,
                            max_seconds: float | None = None) -> tuple[VideoModel, list[float]]:
    """Distil ``model`` with TDM into a K-step student VIDEO_MODEL (resuming a matching run in the models folder)."""
    device = str(model.device)
    pool = video_prompt_pool(model, prompts, cfg.frames)
    teacher = FlowNet(VideoFlowNet(model.dit))
    run = build_run(teacher, cfg, trainable_copy(model.dit), trainable_copy(model.dit))
    ckpt = Checkpointer(run_folder(run_name, cfg, model, prompts), every=checkpoint_every)
    state = distill_tdm(teacher, run, pool, cfg, checkpointer=ckpt, device=device, max_seconds=max_seconds,
                        preview_fn=preview_fn(lambda: student_view(run), model, pool, cfg),
                        preview_every=preview_every, meta={"teacher": model.name})
    dit = student_view(run).net.dit
    meta = {"student_steps": cfg.student_steps, "shift": cfg.shift, "top": cfg.top, "teacher": model.name,
            "train_steps": state.step}
    name = f"{run_name} (tdm video, K={cfg.student_steps}, {state.step} steps)"
    return student_video_model(model, dit, meta, name), state.losses


@torch.no_grad()
def sample_student(model: VideoModel, prompt: str, *, frames: int, seed: int,
                   callback: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """One clip of a TDM video student as a core ``Video``: Euler on its own σ's (deterministic), no CFG."""
    from fewstep.nodes.core.video_nodes import prompt_video, require_prompt
    from fewstep.nodes.zoo.video.model import generate

    require_prompt(prompt, "TDM video sampler")
    k, shift, top = student_schedule(model)
    out, _ = generate(model, [prompt], frames=frames, sigmas=student_sigma_schedule(k, shift, top), cfg=1.0,
                      seed=seed, sampler="flow_euler", callback=callback)
    sig = ", ".join(f"{s:.3g}" for s in flow_student_sigmas(k, shift, top))
    settings = f"{model.name}: TDM student, {k} Euler steps at sigma {sig}, no CFG, seed {seed}"
    return prompt_video(out, model.fps, prompt, settings)


def weights_dir() -> Path:
    """Where the shipped video students live (package data, beside the image students)."""
    return Path(__file__).resolve().parent / "weights"


def shipped_video_students() -> list[str]:
    return sorted(p.name for p in weights_dir().glob("fewstep-tdm-video-*.safetensors"))


def load_shipped_video_student(name: str, teacher: VideoModel) -> VideoModel:
    """A shipped student file around ``teacher``'s VAE and text encoder."""
    if name not in shipped_video_students():
        raise ValueError(f"unknown TDM video student {name!r}; shipped: {shipped_video_students()}")
    dit, meta = load_video_student(weights_dir() / name, teacher.device)
    if meta.get("dit") != teacher.info.get("dit"):
        raise ValueError(f"{name} was distilled from a DiT of config {meta.get('dit')}, but this video model's "
                         f"is {teacher.info.get('dit')}")
    return student_video_model(teacher, dit, meta, name)
