"""What the TDM nodes do, as plain functions: the run folder, the networks, previews, the student MODEL.

A TDM-unify student is kept K-aware in the MODEL's extras (``tdm_steps_unet``) while its ``model_fn`` is the
UNet with K = ``student_steps`` folded in, so any sampler or tool that takes a MODEL gets a plain UNet;
``TDMScheduler`` re-folds it for another step count.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewstep.nodes.core.train.adapter import LORA_TARGETS, UNetAdapter, student_model, teacher_view, unet_of
from fewstep.nodes.core.train.devices import place
from fewstep.nodes.core.train.distill_graph import run_folder as core_run_folder
from fewstep.nodes.core.train.loop import Checkpointer, merged_state_dict
from fewstep.nodes.core.train.prompts import PromptPool, make_pool
from fewstep.nodes.core.train.vp import VPNet
from fewstep.nodes.tdm.loss import sample_tdm_vp, steps_condition, student_timesteps
from fewstep.nodes.tdm.steps import add_steps_input, fold_steps, has_steps_input, unet_config
from fewstep.nodes.tdm.train import TDMConfig, build_run, distill_tdm, student_view

STEPS_UNET = "tdm_steps_unet"      # MODEL.extras key of a K-aware (unify) student UNet
MAX_STEPS = "tdm_max_steps"        # the largest K it was trained for


def run_folder(run_name: str, cfg: TDMConfig, model: Any, prompts: list[str]) -> Path:
    """``<models>/checkpoints/distill/<run>-<hash>``: config, teacher and prompts in the hash, so a changed
    setting starts a new run and an unchanged one resumes."""
    return core_run_folder(run_name, ["tdm", cfg.fingerprint(), str(model.extras.get("name")), *prompts])


def initial_nets(model: Any, cfg: TDMConfig) -> tuple[nn.Module, nn.Module, tuple[str, ...]]:
    """(student, fake score, extra trainables): fp32 copies of the teacher UNet (unify: with the steps input)."""
    base = copy.deepcopy(unet_of(model)).float()
    if cfg.unify:
        base = add_steps_input(base)
        return UNetAdapter(base), UNetAdapter(copy.deepcopy(base)), ("cond_proj",)
    return UNetAdapter(base), UNetAdapter(copy.deepcopy(base)), ()


def plain_unet(net: nn.Module) -> nn.Module:
    """The trained UNet without adapters (LoRA merged into a fresh diffusers UNet of the same config)."""
    if not any("lora_" in k for k in net.state_dict()):
        return net
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**unet_config(net))
    unet.load_state_dict(merged_state_dict(net))
    return unet


def tdm_model(teacher: Any, unet: nn.Module, name: str, steps: int, max_steps: int | None = None) -> Any:
    """A MODEL for a TDM student UNet: K = ``steps`` folded in when it is K-aware (kept in the extras)."""
    p = next(unet_of(teacher).parameters())
    unet = place(unet, p.device, p.dtype).eval().requires_grad_(False)
    if not has_steps_input(unet):
        return student_model(teacher, unet, name)
    model = student_model(teacher, fold_steps(unet, steps), name)
    model.extras[STEPS_UNET] = unet
    model.extras[MAX_STEPS] = max_steps
    return model


def with_steps(model: Any, steps: int) -> Any:
    """``model`` for ``steps``-step sampling: a K-aware student re-folded at K = steps; other models as they are."""
    unet = model.extras.get(STEPS_UNET)
    if unet is None:
        return model
    top = model.extras.get(MAX_STEPS)
    if top is not None and steps > top:
        raise ValueError(f"this TDM-unify student was trained for 1..{top} steps, not {steps}")
    return student_model(model, fold_steps(unet, steps), str(model.extras.get("name")))


def preview_fn(view_of: Any, pool: PromptPool, vae: Any, cfg: TDMConfig) -> Any:
    """A K-step sample of the first prompt, decoded (PIL), for the editor's live preview."""
    def make(step: int) -> Any:
        if vae is None:
            return None
        from PIL import Image

        view: VPNet = view_of()
        gen = torch.Generator(pool.cond.device).manual_seed(0)
        noise = torch.randn((1, *pool.latent_shape), generator=gen, device=pool.cond.device)
        k = cfg.student_steps
        tc = steps_condition(k, 1, noise.device) if cfg.unify else None
        with torch.no_grad():
            image = vae.decode(sample_tdm_vp(view, noise, student_timesteps(k, cfg.total_steps), pool.cond[:1], tc))
        return Image.fromarray((image[0].float().clamp(0, 1) * 255).byte().cpu().numpy())
    return make


def train_tdm_student(model: Any, clip: Any, cfg: TDMConfig, *, prompts: list[str], run_name: str,
                      checkpoint_every: int, vae: Any = None, preview_every: int = 0) -> tuple[Any, list[float]]:
    """Distil ``model`` with TDM into a student MODEL (resuming a matching run in the models folder)."""
    device = str(next(unet_of(model).parameters()).device)
    teacher = teacher_view(model)
    pool = make_pool(model, clip, prompts, None, device)
    student, fake, extra = initial_nets(model, cfg)
    run = build_run(teacher, cfg, student.to(device), fake.to(device), LORA_TARGETS, extra)
    ckpt = Checkpointer(run_folder(run_name, cfg, model, prompts), every=checkpoint_every)
    state = distill_tdm(teacher, run, pool, cfg, checkpointer=ckpt, device=device,
                        autocast=torch.bfloat16 if device.startswith("cuda") else None,
                        preview_fn=preview_fn(lambda: student_view(run), pool, vae, cfg), preview_every=preview_every,
                        meta={"teacher": str(model.extras.get("name"))})
    unet = plain_unet(student_view(run).net.unet)
    name = f"{run_name} (tdm{'-unify' if cfg.unify else ''}, {state.step} steps)"
    return tdm_model(model, unet, name, cfg.student_steps, cfg.student_steps if cfg.unify else None), state.losses


def load_student_model(name: str) -> tuple[Any, Any, Any]:
    """(MODEL, CLIP, VAE): a shipped student on the built-in teacher's device, with the teacher's CLIP and VAE."""
    from fewstep.app.api import cached_model
    from fewstep.nodes.core.loaders import list_builtin, load_checkpoint
    from fewstep.nodes.tdm.students import load_student, shipped_students, student_meta, weights_dir

    if name not in shipped_students():
        raise ValueError(f"unknown TDM student {name!r}; shipped: {shipped_students()}")
    teacher, clip, vae = load_checkpoint(list_builtin()[0])
    p = next(unet_of(teacher).parameters())
    path = weights_dir() / name
    meta = student_meta(path)
    unet = cached_model(path, p.dtype, p.device, lambda: load_student(path, str(p.device), p.dtype))
    top = meta["student_steps"] if meta["unify"] else None
    return tdm_model(teacher, unet, name, meta["student_steps"], top), clip, vae
