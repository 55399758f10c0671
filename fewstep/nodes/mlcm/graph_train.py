"""What the trainer nodes do, as plain functions: prompt pools, student networks, previews, the run folder."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewstep.nodes.core.trainer import Checkpointer, merged_state_dict
from fewstep.nodes.mlcm.adapter import encode_prompts, student_model, teacher_view, unet_of
from fewstep.nodes.mlcm.sampling import lcm_timesteps, milestone_timesteps, sample_consistency_vp
from fewstep.nodes.mlcm.train import DistillConfig, PromptPool, build_student, distill
from fewstep.nodes.mlcm.vp import UNetAdapter

PROMPT_SOURCES = ("list", "procedural", "dataset")
# TLCM's LoRA targets (methods.md §1) in diffusers' UNet2DConditionModel names.
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2", "conv_shortcut", "time_emb_proj")


def prompt_list(source: str, text: str, count: int, seed: int, dataset: Any = None) -> list[str]:
    """The training prompts: one per non-empty line, ``count`` procedural captions, or the dataset's."""
    if source == "list":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    elif source == "procedural":
        from fewstep.nodes.zoo import data

        prompts = [data.caption(s) for s in data.make_split("train", count, seed=seed)]
    elif source == "dataset":
        if dataset is None:
            raise ValueError("prompt_source 'dataset' needs the dataset input connected")
        prompts = [str(dataset[i]["prompt"]) for i in range(len(dataset))]
    else:
        raise ValueError(f"prompt_source must be one of {PROMPT_SOURCES}, got {source!r}")
    if not prompts:
        raise ValueError(f"prompt_source {source!r} gave no prompts (prompts input is empty?)")
    return prompts


def dataset_latents(dataset: Any, vae: Any) -> torch.Tensor:
    """Clean latents of a DATASET ('latent' [C,h,w] or 'image' [H,W,C] encoded with the VAE)."""
    items = [dataset[i] for i in range(len(dataset))]
    if all("latent" in it for it in items):
        return torch.stack([torch.as_tensor(it["latent"]).float() for it in items])
    if vae is None:
        raise ValueError("the dataset holds images: connect a VAE to encode them into latents")
    return torch.cat([vae.encode(torch.as_tensor(it["image"]).float()[None]) for it in items]).float()


def make_pool(model: Any, clip: Any, prompts: list[str], latents: torch.Tensor | None, device: str) -> PromptPool:
    unet = unet_of(model)
    shape = (unet.config["in_channels"], unet.config["sample_size"], unet.config["sample_size"])
    if latents is not None:
        shape = tuple(latents.shape[1:])
    return PromptPool(cond=encode_prompts(clip, prompts).to(device), uncond=encode_prompts(clip, [""]).to(device),
                      prompts=prompts, latent_shape=shape, latents=None if latents is None else latents.to(device))


def run_folder(run_name: str, cfg: DistillConfig, model: Any, prompts: list[str]) -> Path:
    """``<models>/checkpoints/distill/<run>-<hash>``: the hash covers config, teacher and prompts, so a changed
    setting starts a new run and an unchanged one resumes."""
    from fewstep.app.api import current_paths

    key = hashlib.sha256("\n".join([cfg.fingerprint(), str(model.extras.get("name")), *prompts]).encode())
    return current_paths().model_dirs("checkpoints")[0] / "distill" / f"{run_name}-{key.hexdigest()[:10]}"


def initial_net(teacher: Any, init: Any, cfg: DistillConfig) -> tuple[nn.Module, tuple[str, ...]]:
    """The student network (fp32 copy of ``init`` or the teacher; SLAM: with its γ input)."""
    base = copy.deepcopy(unet_of(init if init is not None else teacher)).float()
    if cfg.method == "slam":
        from fewstep.nodes.slam.student import add_gamma_input

        return UNetAdapter(add_gamma_input(base, cfg.gamma_dim)), ("cond_proj",)
    return UNetAdapter(base), ()


def finish(net: nn.Module, cfg: DistillConfig, like: nn.Module) -> nn.Module:
    """The plain student UNet: LoRA merged, SLAM's γ = 1 folded out; in the teacher's dtype and device."""
    unet = net.unet
    if any("lora_" in k for k in unet.state_dict()):
        state = merged_state_dict(unet)
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel(**{k: v for k, v in unet.config.items() if not k.startswith("_")})
        unet.load_state_dict(state)
    if cfg.method == "slam":
        from fewstep.nodes.slam.student import fold_gamma

        unet = fold_gamma(unet)
    p = next(like.parameters())
    return unet.to(device=p.device, dtype=p.dtype).eval().requires_grad_(False)


def preview_fn(view: Any, pool: PromptPool, vae: Any, cfg: DistillConfig) -> Any:
    """A 4-step sample of the first prompt, decoded (PIL), for the editor's live preview."""
    steps = min(4, cfg.num_segments) if cfg.method.startswith("mlcm") else 4
    ts = milestone_timesteps(steps, cfg.num_segments) if cfg.method.startswith("mlcm") else lcm_timesteps(steps)

    def make(step: int) -> Any:
        from PIL import Image

        gen = torch.Generator(pool.cond.device).manual_seed(0)
        noise = torch.randn((1, *pool.latent_shape), generator=gen, device=pool.cond.device)
        tc = None
        if cfg.method == "slam":
            from fewstep.nodes.slam.loss import gamma_embedding

            tc = gamma_embedding(torch.ones(1, device=noise.device), cfg.gamma_dim)
        with torch.no_grad():
            x0 = sample_consistency_vp(view, noise, ts, pool.cond[:1], gen, timestep_cond=tc)
            image = vae.decode(x0) if vae is not None else None
        if image is None:
            return None
        return Image.fromarray((image[0].float().clamp(0, 1) * 255).byte().cpu().numpy())
    return make


def train_student(model: Any, clip: Any, cfg: DistillConfig, *, prompts: list[str], run_name: str,
                  checkpoint_every: int, init: Any = None, vae: Any = None, latents: torch.Tensor | None = None,
                  preview_every: int = 0) -> tuple[Any, list[float]]:
    """Distil ``model`` into a student MODEL (resuming a matching run in the models folder)."""
    device = str(next(unet_of(model).parameters()).device)
    teacher = teacher_view(model)
    pool = make_pool(model, clip, prompts, latents, device)
    net, extra = initial_net(model, init, cfg)
    student = build_student(teacher, cfg, net=net.to(device), lora_targets=LORA_TARGETS, extra_trainable=extra)
    ckpt = Checkpointer(run_folder(run_name, cfg, model, prompts), every=checkpoint_every)
    from fewstep.nodes.mlcm.terms import zoo_terms

    terms = zoo_terms(cfg.perceptual_weight, cfg.reward_weight, vae, device)
    state = distill(teacher, student, pool, cfg, checkpointer=ckpt, device=device,
                    autocast=torch.bfloat16 if device.startswith("cuda") else None,
                    preview_fn=preview_fn(student.view, pool, vae, cfg), preview_every=preview_every,
                    meta={"teacher": str(model.extras.get("name"))}, terms=terms)
    unet = finish(student.view.net, cfg, unet_of(model))
    return student_model(model, unet, f"{run_name} ({cfg.method}, {state.step} steps)"), state.losses
