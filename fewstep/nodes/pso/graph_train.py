"""What the PSO trainer nodes do, as plain functions over core's MODEL / CLIP / VAE link values."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from fewstep.nodes.core.train.adapter import (
    check_conditioning,
    encode_prompts,
    student_model,
    unet_of,
    vp_schedule_of,
)
from fewstep.nodes.core.train.distill_graph import run_folder as core_run_folder
from fewstep.nodes.core.train.loop import Checkpointer
from fewstep.nodes.core.train.prompts import make_pool
from fewstep.nodes.pso.students import lora_policy, merged_unet
from fewstep.nodes.pso.train import OfflineData, PSOConfig, make_step, sample_negatives, train


def run_folder(run_name: str, cfg: PSOConfig, model: Any, keys: list[str]) -> Path:
    """``<models>/checkpoints/pso/<run>-<hash>``: the hash covers the config, the student's name and ``keys``
    (prompts, reward type, image fingerprint), so a changed setting starts a new run and an unchanged one resumes."""
    return core_run_folder(run_name, [cfg.fingerprint(), str(model.extras.get("name")), *keys], kind="pso")


def _fingerprint(images: torch.Tensor) -> str:
    return hashlib.sha256(images.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _finish(model: Any, policy: Any, name: str) -> Any:
    unet = unet_of(model)
    return student_model(model, merged_unet(policy.net, unet), name)


def _check_model(model: Any) -> None:
    if model.prediction not in ("eps", "v", "x0"):
        raise TypeError(f"PSO: the student MODEL must be a VP eps / v / x0 model, got {model.prediction!r}")


def train_online(model: Any, clip: Any, vae: Any, reward: Any, prompts: list[str], cfg: PSOConfig, *,
                 run_name: str, checkpoint_every: int) -> tuple[Any, list[float]]:
    """Online PSO (or its naive baseline, ``cfg.mode``) of a student MODEL; returns (tuned MODEL, losses)."""
    _check_model(model)
    if not callable(reward):
        raise TypeError(f"PSOOnline: reward_model must be a callable (images, prompts) -> [B], got {type(reward).__name__}")
    unet = unet_of(model)
    device = str(next(unet.parameters()).device)
    pool = make_pool(model, clip, prompts, None, device)
    policy, reference = lora_policy(unet, vp_schedule_of(model), cfg.lora_rank, model.prediction)
    policy.net.to(device)
    step = make_step(cfg, policy, reference, pool=pool, reward=reward, decode=vae.decode)
    ckpt = Checkpointer(run_folder(run_name, cfg, model, [type(reward).__name__, *prompts]), every=checkpoint_every)
    state = train(policy.net, step, cfg, device=device, checkpointer=ckpt,
                  autocast=torch.bfloat16 if device.startswith("cuda") else None,
                  meta={"student": str(model.extras.get("name"))})
    return _finish(model, policy, f"{run_name} (pso {cfg.mode}, {state.step} steps)"), state.losses


def train_offline(model: Any, clip: Any, vae: Any, images: torch.Tensor, prompt: str, cfg: PSOConfig, *,
                  run_name: str, checkpoint_every: int) -> tuple[Any, list[float]]:
    """Offline PSO (concept customization; or its naive baseline) on target IMAGEs [N,H,W,3] of ``prompt``."""
    _check_model(model)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"PSOOffline: images must be an IMAGE [N,H,W,3], got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if not prompt.strip():
        raise ValueError("PSOOffline: the concept prompt is empty")
    unet = unet_of(model)
    device = str(next(unet.parameters()).device)
    positives = vae.encode(images).float().to(device)                                  # [N, C, h, w]
    expected = (unet.config["in_channels"], unet.config["sample_size"], unet.config["sample_size"])
    if tuple(positives.shape[1:]) != expected:
        raise ValueError(f"PSOOffline: the images encode to latents {tuple(positives.shape[1:])}, the student "
                         f"samples {expected}: resize the images to the student's resolution")
    cond = encode_prompts(clip, [prompt], expected[1:]).to(device)                      # [1, T, D] (SDXL: + pooled, ids)
    check_conditioning(unet, cond)
    policy, reference = lora_policy(unet, vp_schedule_of(model), cfg.lora_rank, model.prediction)
    policy.net.to(device)
    negatives = None
    if cfg.mode == "offline":
        negatives = sample_negatives(reference, cond, cfg.num_negatives, expected, list(cfg.timesteps), cfg.seed)
    step = make_step(cfg, policy, reference, data=OfflineData(positives, negatives, cond))
    ckpt = Checkpointer(run_folder(run_name, cfg, model, [prompt, _fingerprint(images)]), every=checkpoint_every)
    state = train(policy.net, step, cfg, device=device, checkpointer=ckpt,
                  autocast=torch.bfloat16 if device.startswith("cuda") else None,
                  meta={"student": str(model.extras.get("name"))})
    return _finish(model, policy, f"{run_name} (pso {cfg.mode}, {state.step} steps)"), state.losses
