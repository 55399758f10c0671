"""Training recipes of the built-in AR models: VQ tokenizer fit, AR transformer and MAR model.

Data: the procedural scenes of ``nodes.zoo.data`` (training split), each rendered in ``variants`` copies
whose objects get fresh jitter (the caption names only shape, colour, size and cells, so it stays exact),
with the MiniLM sentence embedding of its caption (``captions.read_cache`` on machines without MiniLM).
Held-out captions (the caption-hash split) are used only for evaluation.

Both models train with AdamW, linear warm-up then cosine decay, bf16 autocast on CUDA, and stop at a step
count or a wall-time budget, whichever comes first. The orchestration (fit -> train -> evaluate -> save)
is ``bench/zoo/ar_gpu_run.py``; the presets below are its recipes.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .. import data
from .captions import CaptionSet
from .models import ARConfig, ARTransformer, MARConfig, MARModel
from .tokenizer import VQConfig, VQTokenizer, fit_tokenizer

LOG = logging.getLogger("fewstep.zoo.ar.train")


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings of one model.

    Args:
        steps: optimizer steps (upper bound; ``seconds`` may stop earlier).
        batch_size: sequences per step.
        lr / weight_decay / warmup: AdamW, linear warm-up over ``warmup`` steps then cosine to 10% of lr.
        seconds: wall-time budget of the loop (None = no limit).
        seed: data order, caption dropout and masks.
    """

    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 200
    seconds: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class Preset:
    """A whole recipe: tokenizer shape, data sizes, both models and their optimisation."""

    vq: VQConfig
    vq_images: int
    train_captions: int
    variants: int
    ar: ARConfig
    ar_recipe: Recipe
    mar: MARConfig
    mar_recipe: Recipe


PRESETS: dict[str, Preset] = {
    # one H100, shared with other jobs: 140 s per model (planned; not run yet, see the model cards)
    "gpu": Preset(VQConfig(codebook_size=1024), 4096, 8192, 6,
                  ARConfig(), Recipe(steps=40_000, batch_size=256, lr=1e-3, warmup=300, seconds=140),
                  MARConfig(), Recipe(steps=40_000, batch_size=256, lr=1e-3, warmup=300, seconds=140)),
    # the CPU demo shipped from this checkout: one thread of a shared 2-core machine, 10 min per model
    "cpu": Preset(VQConfig(codebook_size=512), 2048, 8192, 2,
                  ARConfig(vocab_size=512, dim=96, n_layers=4, n_heads=4),
                  Recipe(steps=100_000, batch_size=32, lr=2e-3, warmup=50, seconds=600),
                  MARConfig(dim=96, n_layers=3, n_heads=4, head_width=128, head_blocks=2),
                  Recipe(steps=100_000, batch_size=32, lr=2e-3, warmup=50, seconds=600)),
    # smoke test of the driver
    "tiny": Preset(VQConfig(codebook_size=64), 256, 256, 1,
                   ARConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2), Recipe(steps=3, batch_size=8, warmup=1),
                   MARConfig(dim=32, n_layers=1, n_heads=2, head_width=32, head_blocks=1),
                   Recipe(steps=3, batch_size=8, warmup=1)),
}


# ----------------------------------------------------------------------------- data
def rejitter(scene: data.Scene, rng: random.Random) -> data.Scene:
    """``scene`` with fresh per-object jitter (same caption, same cells)."""
    objs = tuple(replace(o, dx=rng.uniform(-data.JITTER, data.JITTER), dy=rng.uniform(-data.JITTER, data.JITTER))
                 for o in scene.objects)
    return replace(scene, objects=objs)


def render_images(scenes: list[data.Scene]) -> torch.Tensor:
    """Renders ``[N, 3, 64, 64]`` float32 in 0..1."""
    arrays = np.stack([np.asarray(data.render(s), dtype=np.uint8) for s in scenes])  # [N, 64, 64, 3]
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255.0


def fit_vq(scenes: list[data.Scene], config: VQConfig, seed: int = 0,
           device: torch.device | str = "cpu") -> VQTokenizer:
    """The tokenizer fitted on renders of ``scenes`` (PCA and k-means run on ``device``)."""
    return fit_tokenizer(render_images(scenes).to(device), config, seed=seed)


@torch.no_grad()
def encode_dataset(tokenizer: VQTokenizer, scenes: list[data.Scene], variants: int, seed: int = 0,
                   chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens ``[V, N, L]`` (int16) and continuous latents ``[V, N, L, D]`` (fp16) of ``variants`` jittered
    renders of every scene (variant 0 is the scene as generated)."""
    rng = random.Random(f"ar-variants:{seed}")
    tokens, latents = [], []
    for v in range(variants):
        vs = scenes if v == 0 else [rejitter(s, rng) for s in scenes]
        tk, lt = [], []
        for i in range(0, len(vs), chunk):
            z = tokenizer.encode_continuous(render_images(vs[i:i + chunk]).to(tokenizer.mean.device))
            tk.append(tokenizer.quantize(z).to(torch.int16).cpu())
            lt.append(z.half().cpu())
        tokens.append(torch.cat(tk))
        latents.append(torch.cat(lt))
    return torch.stack(tokens), torch.stack(latents)


# ----------------------------------------------------------------------------- loop
def lr_at(step: int, recipe: Recipe, elapsed: float = 0.0) -> float:
    """Linear warm-up to ``lr`` then cosine decay to 0.1 lr at ``recipe.steps`` or at ``recipe.seconds`` of
    wall time, whichever the run is closer to (so a run stopped by its time budget ends annealed)."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = min(1.0, (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup))
    if recipe.seconds:
        progress = max(progress, min(1.0, elapsed / recipe.seconds))
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def fit_model(model: torch.nn.Module, batch_loss: Callable[[int, torch.Generator], torch.Tensor], recipe: Recipe,
              device: torch.device | str, log_every: int = 100) -> list[dict[str, float]]:
    """AdamW on ``batch_loss(step, generator)`` for ``recipe.steps`` steps or ``recipe.seconds``; returns the log."""
    device = torch.device(device)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=recipe.weight_decay)
    gen = torch.Generator(device).manual_seed(recipe.seed)
    log: list[dict[str, float]] = []
    start, running = time.perf_counter(), 0.0
    model.train()
    for step in range(recipe.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, recipe, time.perf_counter() - start)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = batch_loss(step, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += float(loss.detach()) if (step + 1) % 10 == 0 or step < 10 else 0.0
        elapsed = time.perf_counter() - start
        last = step + 1 == recipe.steps or (recipe.seconds is not None and elapsed > recipe.seconds)
        if (step + 1) % log_every == 0 or last:
            log.append({"step": step + 1, "loss": float(loss.detach()), "seconds": elapsed})
            LOG.info("step %d loss %.4f (%.0f s)", step + 1, float(loss.detach()), elapsed)
        if last:
            break
    model.eval()
    return log


def _batch_rows(n_rows: int, variants: int, batch: int, gen: torch.Generator,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.randint(n_rows, (batch,), generator=gen, device=gen.device).to(device)
    var = torch.randint(variants, (batch,), generator=gen, device=gen.device).to(device)
    return var, rows


def train_ar(tokens: torch.Tensor, captions: CaptionSet, config: ARConfig, recipe: Recipe,
             device: torch.device | str, init: ARTransformer | None = None) -> tuple[ARTransformer, list[dict[str, float]]]:
    """Train an ``ARTransformer`` on tokens ``[V, N, L]`` of the caption set's scenes (from ``init`` when given)."""
    device = torch.device(device)
    torch.manual_seed(recipe.seed)
    model = ARTransformer(config).to(device)
    if init is not None:
        model.load_state_dict(init.state_dict())
    toks, cond = tokens.to(device).long(), captions.embeddings.to(device)

    def batch_loss(step: int, gen: torch.Generator) -> torch.Tensor:
        var, rows = _batch_rows(toks.shape[1], toks.shape[0], recipe.batch_size, gen, device)
        return model.loss(toks[var, rows], cond[rows], gen)

    return model, fit_model(model, batch_loss, recipe, device)


def train_mar(latents: torch.Tensor, captions: CaptionSet, config: MARConfig, recipe: Recipe,
              device: torch.device | str, init: MARModel | None = None) -> tuple[MARModel, list[dict[str, float]]]:
    """Train a ``MARModel`` on continuous tokens ``[V, N, L, D]`` of the caption set's scenes (from ``init``)."""
    device = torch.device(device)
    torch.manual_seed(recipe.seed)
    model = MARModel(config).to(device)
    lat, cond = latents.to(device).float(), captions.embeddings.to(device)
    if init is not None:
        model.load_state_dict(init.state_dict())
    else:
        model.token_std.copy_(lat.reshape(-1, lat.shape[-1]).std(0).clamp_min(1e-4))       # [D]

    def batch_loss(step: int, gen: torch.Generator) -> torch.Tensor:
        var, rows = _batch_rows(lat.shape[1], lat.shape[0], recipe.batch_size, gen, device)
        return model.loss(lat[var, rows], cond[rows], gen)

    return model, fit_model(model, batch_loss, recipe, device)


def preset_dict(preset: Preset) -> dict[str, object]:
    """JSON-able description of a preset (for model cards and run reports)."""
    return asdict(preset)
