"""What the consistency-distillation trainer nodes do, as plain functions, and the widgets they share.

``MLCMDistill`` (``nodes.mlcm``) and ``SLAMDistill`` (``nodes.slam``) are thin nodes over :func:`run_trainer`:
each passes its widget values and its pack's loss factory; the student network (full / LoRA / SLAM's γ
input), the run folder, resume, previews and the returned MODEL are built here once.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from fewstep.app.api import NodeOutput
from fewstep.nodes.core.train.adapter import (
    LORA_TARGETS,
    UNetAdapter,
    plain_unet,
    student_model,
    teacher_view,
    unet_of,
)
from fewstep.nodes.core.train.consistency import lcm_timesteps, milestone_timesteps, sample_consistency_vp
from fewstep.nodes.core.train.devices import place
from fewstep.nodes.core.train.distill import DistillConfig, DistillLoss, build_student, distill
from fewstep.nodes.core.train.gamma import add_gamma_input, fold_gamma, gamma_embedding
from fewstep.nodes.core.train.loop import Checkpointer
from fewstep.nodes.core.train.prompts import (
    Dataset,
    PromptPool,
    dataset_latents,
    make_pool,
    prompt_list,
)
from fewstep.nodes.core.train.trainer_schema import PASS_THROUGH, common_fields, trainer_inputs  # noqa: F401 (re-exported)
from fewstep.nodes.core.train.vp import VPNet

if TYPE_CHECKING:
    from PIL.Image import Image

    from fewstep.nodes.core.denoiser import Denoiser
    from fewstep.nodes.core.text import TextEncoder
    from fewstep.nodes.core.vae import VAEWrapper

# (cfg, vae, device) -> the method's loss object; each pack passes its own.
LossFactory = Callable[[DistillConfig, "VAEWrapper | None", str], DistillLoss]

def run_trainer(cfg_fields: dict[str, object], loss_factory: LossFactory, *, model: Denoiser, clip: TextEncoder,
                prompt_source: str, prompts: str, prompt_count: int, run_name: str, checkpoint_every: int,
                preview_every: int, vae: VAEWrapper | None = None, dataset: Dataset | None = None,
                init: Denoiser | None = None) -> NodeOutput:
    """Shared body of the trainer nodes: build the config, the prompt list, train, return MODEL + loss curve."""
    cfg = DistillConfig(**cfg_fields)
    texts = prompt_list(prompt_source, prompts, prompt_count, cfg.seed, dataset)
    latents = dataset_latents(dataset, vae) if cfg.state_source == "real" and dataset is not None else None
    student, losses = train_student(model, clip, cfg, loss_factory, prompts=texts, run_name=run_name, init=init,
                                    checkpoint_every=checkpoint_every, vae=vae, latents=latents,
                                    preview_every=preview_every)
    return NodeOutput(student, ui={"loss": losses})


def run_folder(run_name: str, parts: list[str], kind: str = "distill") -> Path:
    """``<models>/checkpoints/<kind>/<run>-<hash>``: the hash covers ``parts`` (config fingerprint, teacher,
    prompts ...), so a changed setting starts a new run and an unchanged one resumes.

    ``run_name`` is user input and the checkpointer deletes older ``step_*`` files in this folder: it goes
    through the node API's safe-path rule (no absolute paths, ``..``, separators or links out), else
    ValueError naming the input."""
    from fewstep.app.api import current_paths, safe_child

    key = hashlib.sha256("\n".join(parts).encode())
    root = current_paths().model_dirs("checkpoints")[0] / kind
    return safe_child(root, f"{run_name}-{key.hexdigest()[:10]}", "run_name", allow_subfolders=False)


def initial_net(teacher: Denoiser, init: Denoiser | None, cfg: DistillConfig) -> tuple[nn.Module, tuple[str, ...]]:
    """The student network (fp32 copy of ``init`` or the teacher; SLAM: with its γ input)."""
    base = copy.deepcopy(unet_of(init if init is not None else teacher)).float()
    if cfg.method == "slam":
        return UNetAdapter(add_gamma_input(base, cfg.gamma_dim)), ("cond_proj",)
    return UNetAdapter(base), ()


def finish(net: nn.Module, cfg: DistillConfig, like: nn.Module) -> nn.Module:
    """The plain student UNet: LoRA merged, SLAM's γ = 1 folded out; in the teacher's dtype and device."""
    unet = plain_unet(net.unet)
    if cfg.method == "slam":
        unet = fold_gamma(unet)
    p = next(like.parameters())
    return place(unet, p.device, p.dtype).eval().requires_grad_(False)


def to_pil(image: torch.Tensor) -> Image:
    """The first IMAGE [B, H, W, 3] in 0..1 as a PIL image (the editor's live preview)."""
    from PIL import Image as PILImage

    return PILImage.fromarray((image[0].float().clamp(0, 1) * 255).byte().cpu().numpy())


def preview_fn(view: VPNet, pool: PromptPool, vae: VAEWrapper | None, cfg: DistillConfig
               ) -> Callable[[int], Image | None]:
    """A 4-step sample of the first prompt, decoded (PIL), for the editor's live preview."""
    steps = min(4, cfg.num_segments) if cfg.method.startswith("mlcm") else 4
    ts = milestone_timesteps(steps, cfg.num_segments) if cfg.method.startswith("mlcm") else lcm_timesteps(steps)

    def make(step: int) -> Image | None:
        gen = torch.Generator(pool.cond.device).manual_seed(0)
        noise = torch.randn((1, *pool.latent_shape), generator=gen, device=pool.cond.device)
        tc = gamma_embedding(torch.ones(1, device=noise.device), cfg.gamma_dim) if cfg.method == "slam" else None
        with torch.no_grad():
            x0 = sample_consistency_vp(view, noise, ts, pool.cond[:1], gen, timestep_cond=tc)
            image = vae.decode(x0) if vae is not None else None
        return None if image is None else to_pil(image)
    return make


def train_student(model: Denoiser, clip: TextEncoder, cfg: DistillConfig, loss_factory: LossFactory, *,
                  prompts: list[str], run_name: str, checkpoint_every: int, init: Denoiser | None = None,
                  vae: VAEWrapper | None = None, latents: torch.Tensor | None = None,
                  preview_every: int = 0) -> tuple[Denoiser, list[float]]:
    """Distil ``model`` into a student MODEL (resuming a matching run in the models folder)."""
    device = str(next(unet_of(model).parameters()).device)
    teacher = teacher_view(model)
    pool = make_pool(model, clip, prompts, latents, device)
    net, extra = initial_net(model, init, cfg)
    student = build_student(teacher, cfg, net=net.to(device), lora_targets=LORA_TARGETS, extra_trainable=extra)
    name = str(model.extras.get("name"))
    ckpt = Checkpointer(run_folder(run_name, [cfg.fingerprint(), name, *prompts]), every=checkpoint_every)
    state = distill(teacher, student, pool, cfg, loss_factory(cfg, vae, device), checkpointer=ckpt, device=device,
                    autocast=torch.bfloat16 if device.startswith("cuda") else None,
                    preview_fn=preview_fn(student.view, pool, vae, cfg), preview_every=preview_every,
                    meta={"teacher": name})
    unet = finish(student.view.net, cfg, unet_of(model))
    return student_model(model, unet, f"{run_name} ({cfg.method}, {state.step} steps)"), state.losses
