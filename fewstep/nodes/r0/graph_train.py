"""What ``R0Train`` does, as plain functions: rewards from the node inputs, the run folder, previews, the loop."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewstep.nodes.core.train.adapter import UNetAdapter, student_model, teacher_view, unet_of
from fewstep.nodes.core.train.distill_graph import run_folder as core_run_folder
from fewstep.nodes.core.train.loop import Checkpointer, merged_state_dict
from fewstep.nodes.core.train.prompts import PromptPool, make_pool
from fewstep.nodes.core.train.vp import VPNet
from fewstep.nodes.r0.generator import rollout
from fewstep.nodes.r0.train import R0Config, prepare_student, train_r0, vae_decoder


def combine(rewards: list[tuple[Any, float]], normalize_grads: bool) -> Any:
    """One WeightedRewards over the connected REWARD_MODELs; a combined reward is flattened into its terms
    (its weights multiplied in), so gradient normalisation applies per underlying reward."""
    from fewstep.nodes.core.rewards import Term, WeightedRewards

    terms: list[Term] = []
    for i, (reward, weight) in enumerate(rewards, start=1):
        if not callable(reward):
            raise TypeError(f"R0Train: reward_{i} is not a REWARD_MODEL (got {type(reward).__name__})")
        inner = reward.terms if isinstance(reward, WeightedRewards) else [Term(type(reward).__name__, reward, 1.0)]
        terms += [Term(f"{i}.{t.name}", t.reward, weight * t.weight) for t in inner]
    return WeightedRewards(terms, normalize_grads=normalize_grads)


def run_folder(run_name: str, cfg: R0Config, model: Any, prompts: list[str], rewards: Any) -> Path:
    """``<models>/checkpoints/r0/<run>-<hash>``: the hash covers config, teacher, rewards and prompts, so a
    changed setting starts a new run and an unchanged one resumes."""
    names = [f"{t.name}:{t.weight}" for t in rewards.terms]
    return core_run_folder(run_name, [cfg.fingerprint(), str(model.extras.get("name")), *names, *prompts], kind="r0")


def preview_fn(view: VPNet, pool: PromptPool, decode: Any, cfg: R0Config) -> Any:
    """The student's η = 0 sample of the first prompt, decoded (PIL), for the editor's live preview."""
    def make(step: int) -> Any:
        from PIL import Image

        gen = torch.Generator(pool.cond.device).manual_seed(0)
        noise = torch.randn((1, *pool.latent_shape), generator=gen, device=pool.cond.device)
        with torch.no_grad():
            x0 = rollout(view, noise, cfg.timesteps, pool.cond[:1], pool.uncond, cfg.guidance,
                         torch.zeros(1, device=noise.device), gen).x0
            image = decode(x0)
        return Image.fromarray((image[0].clamp(0, 1) * 255).byte().cpu().numpy())
    return make


def finish(net: nn.Module, like: nn.Module) -> nn.Module:
    """The plain student network: LoRA merged into a copy of the teacher's (same class, dtype and device)."""
    state = merged_state_dict(net.unet) if any("lora_" in k for k in net.unet.state_dict()) else net.unet.state_dict()
    plain = copy.deepcopy(like)
    p = next(like.parameters())
    plain.load_state_dict({k: v.to(p.dtype) for k, v in state.items()}, strict=True)
    return plain.to(device=p.device).eval().requires_grad_(False)


def train_student(model: Any, clip: Any, vae: Any, rewards: Any, cfg: R0Config, *, prompts: list[str], run_name: str,
                  checkpoint_every: int, preview_every: int = 0) -> tuple[Any, list[float], list[dict[str, float]]]:
    """Train an R0 generator from ``model`` (resuming a matching run in the models folder).

    Returns (student MODEL, loss per step, reward numbers per step of this call)."""
    teacher = unet_of(model)
    device = str(next(teacher.parameters()).device)
    view = teacher_view(model)
    net = prepare_student(UNetAdapter(copy.deepcopy(teacher).float()), cfg)
    student = VPNet(net, view.schedule, view.prediction_type)
    pool = make_pool(model, clip, prompts, None, device)
    decode = vae_decoder(vae.vae, vae.scaling_factor)
    ckpt = Checkpointer(run_folder(run_name, cfg, model, prompts, rewards), every=checkpoint_every)
    state, history = train_r0(student, pool, rewards, decode, cfg, device=device, checkpointer=ckpt,
                              autocast=torch.bfloat16 if device.startswith("cuda") else None,
                              meta={"teacher": str(model.extras.get("name"))},
                              preview_fn=preview_fn(student, pool, decode, cfg), preview_every=preview_every)
    name = f"{run_name} (R0, {state.step} steps)"
    return student_model(model, finish(net, teacher), name), state.losses, history
