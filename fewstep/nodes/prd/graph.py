"""What the PRD nodes do, as plain functions over the link values ``PRD_TEACHER`` (the zoo's
:class:`~fewstep.nodes.zoo.multiview.builtin.MultiviewTeacher`) and ``PRD_GENERATOR``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fewstep.nodes.core.render.triplane import Triplane
from fewstep.nodes.prd.bundle import GENERATOR_FILE, read_generator
from fewstep.nodes.prd.generator import GeneratorConfig, TriplaneGenerator, generate
from fewstep.nodes.prd.train import (
    PRDConfig,
    build_generator,
    load_generator_state,
    render_triplane_views,
    train_prd,
)
from fewstep.nodes.zoo.multiview.builtin import CaptionEmbedder, MultiviewTeacher
from fewstep.nodes.zoo.multiview.data import all_primitives


@dataclass(frozen=True, eq=False)
class PRDGenerator:
    """``PRD_GENERATOR``: a triplane generator, its caption embedder and the K it was distilled for."""

    generator: TriplaneGenerator
    embed: CaptionEmbedder
    k: int
    name: str


def load_generator_bundle(teacher: MultiviewTeacher, root: Path | None = None) -> PRDGenerator:
    """The shipped generator: its adapters, head and decoder on a copy of the teacher's UNet."""
    state, config = read_generator(root)
    gen = TriplaneGenerator(teacher.teacher.unet, GeneratorConfig(**config["generator"]))
    return PRDGenerator(load_generator_state(gen, state), teacher.embed, int(config["k"]), GENERATOR_FILE)


def distill(teacher: MultiviewTeacher, captions: list[str], cfg: PRDConfig, run_name: str, checkpoint_every: int,
            preview_every: int) -> tuple[PRDGenerator, list[float]]:
    """PRD-distil a fresh generator (resuming a matching run under <models>/checkpoints/prd)."""
    from fewstep.nodes.core.train.distill_graph import run_folder, to_pil
    from fewstep.nodes.core.train.loop import Checkpointer

    gen = build_generator(teacher.teacher, cfg)
    folder = run_folder(run_name, [cfg.fingerprint(), teacher.name, *captions], kind="prd")
    preview_text = teacher.embed(captions[:1])

    def preview(step: int):
        triplane = generate(gen.eval(), preview_text, cfg.k, torch.randn((1, *gen.latent_shape),
                                                                          generator=torch.Generator().manual_seed(0)))
        gen.train()
        return to_pil(views_image(triplane, 64))

    state = train_prd(gen, teacher.teacher, captions, teacher.embed, cfg,
                      checkpointer=Checkpointer(folder, every=checkpoint_every), preview_fn=preview,
                      preview_every=preview_every)
    name = f"{run_name} (PRD K={cfg.k}, {cfg.lora} LoRA, {state.step} steps)"
    return PRDGenerator(gen.eval().requires_grad_(False), teacher.embed, cfg.k, name), state.losses


def text_to_triplane(bundle: PRDGenerator, text: str, k: int, seed: int) -> Triplane:
    gen = bundle.generator
    noise = torch.randn((1, *gen.latent_shape), generator=torch.Generator().manual_seed(seed))
    return generate(gen, bundle.embed([text]), k, noise)


@torch.no_grad()
def views_image(triplane: Triplane, size: int, views: int = 4) -> torch.Tensor:
    """IMAGE [1, S, views · S, 3]: the object from ``views`` azimuths 360 / views apart at 15° elevation."""
    angles = torch.tensor([[i * 360.0 / views, 15.0] for i in range(views)])
    rgb = (render_triplane_views(triplane, angles, size, 48, 0.01, None) + 1) / 2            # [V, 3, S, S]
    return rgb.clamp(0, 1).permute(2, 0, 3, 1).reshape(1, size, views * size, 3)


def caption_list(source: str, captions: str) -> list[str]:
    """The 24 procedural captions, or the user's lines."""
    if source == "procedural":
        return [p.caption() for p in all_primitives()]
    lines = [line.strip() for line in captions.splitlines() if line.strip()]
    if not lines:
        raise ValueError("caption_source = list needs at least one caption line")
    return lines

