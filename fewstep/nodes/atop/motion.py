"""ATOP stages A and C's video prior: personalise the built-in video DiT on a few motion clips of a category
(few-shot, LoRA, the flow-matching loss, a caption with a motion token), then use it as a score for the
articulation fit (score distillation sampling, SDS).

Stage A (``personalise``). Clips x0 (the category's motion renders at the model's 64 px, VAE-encoded to
latents z [T, 4, 16, 16]) and the caption c (e.g. "[V] lid opening"). LoRA adapters on the DiT's attention
projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) are the only trainable weights; the base stays frozen:

    σ ~ U(0, 1),  ε ~ N(0, I),  x_σ = (1 − σ) z + σ ε,   L_A = ‖ v_θ(x_σ, σ, c) − (ε − z) ‖²

run by the shared resumable loop (``fewstep.nodes.core.train.loop.fit``: checkpoints, resume, per-step seeds).

Stage C's score (``MotionPrior.sds_surrogate``). For a rendered clip with latent z(ψ) (differentiable through
the VAE encoder and the soft rasteriser), one noise level σ ~ U(σ_lo, σ_hi) and ε ~ N(0, I):

    x_σ = (1 − σ) z + σ ε,   v̂ = v_θ(x_σ, σ, c),   ε̂ = x_σ + (1 − σ) v̂         (flow_param.velocity_to_x0_eps)
    ∇_ψ L_SDS = E_{σ,ε} [ w(σ) (ε̂ − ε) ∂z/∂ψ ],   w(σ) = 1

(ε̂ − ε = (1 − σ)(v̂ − (ε − z)): the flow model's velocity error, seen as a noise error). The DiT's Jacobian is
skipped (Poole et al. 2022): the loss is the surrogate  ½ ‖z − sg(z − g)‖²  with g = w(σ)(ε̂ − ε), whose
gradient in z is exactly g. ``denoising_score`` is the same error without gradients at fixed draws: the
number the fit compares across joint types and screens random joints with.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewstep.nodes.atop.evidence import EvidenceConfig, render_evidence
from fewstep.nodes.atop.objects import make_object
from fewstep.nodes.core.train.flow_param import velocity_to_x0_eps
from fewstep.nodes.core.train.loop import Checkpointer, FitSpec, add_lora, fit, trainable_parameters

FLOW_MULTIPLIER = 1000.0   # the DiT's timestep input is σ · 1000
CAPTIONS = {"box_lid": "[V] lid opening", "drawer": "[V] drawer sliding out", "door": "[V] door swinging open"}
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class PersonaliseConfig:
    """Args: training object seeds of the category (kept apart from the seeds a fit is scored on), views and
    frames of each seed's evidence (one clip per view), LoRA rank, steps, batch (clips per step), Adam lr,
    run seed."""

    seeds: tuple[int, ...] = (100, 101, 102, 103)
    views: int = 3
    frames: int = 4
    rank: int = 8
    steps: int = 300
    batch: int = 8
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.seeds or self.steps < 1 or self.rank < 1 or self.batch < 1:
            raise ValueError(f"personalisation needs seeds, steps >= 1, rank >= 1 and batch >= 1, got {self}")


def category_clips(kind: str, config: PersonaliseConfig, size: int = 64) -> Tensor:
    """Motion clips [N, T, size, size, 3] of category ``kind``: the evidence renders (``config.views`` cameras,
    ``config.frames`` frames) of objects ``config.seeds``, one clip per (seed, view)."""
    out = []
    for seed in config.seeds:
        evidence = render_evidence(make_object(kind, seed), EvidenceConfig(views=config.views, frames=config.frames,
                                                                            size=size))
        out.append(evidence.frames)
    return torch.cat(out)


def encode(vae: nn.Module, scale: float, frames: Tensor) -> Tensor:
    """Frames [B, T, H, W, 3] in 0..1 (any side; resized to 64 px bilinearly) → scaled latents [B, T, 4, 16, 16],
    differentiable (the VAE posterior's mean)."""
    b, t, h, w, _ = frames.shape
    x = frames.reshape(b * t, h, w, 3).permute(0, 3, 1, 2)
    if h != 64 or w != 64:
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    z = vae.encode(x * 2 - 1).latent_dist.mean * scale
    return z.reshape(b, t, *z.shape[1:])


@dataclass
class MotionPrior:
    """A (personalised) video DiT with its VAE and one caption's text tokens: the score the SDS fit reads.

    ``dit`` returns the flow velocity for ``(x [B, T, 4, 16, 16], σ·1000 [B], context, mask)``; it is frozen
    here (no parameter requires grad). ``caption`` and ``info`` describe how it was personalised."""

    dit: nn.Module
    vae: nn.Module
    vae_scale: float
    context: Tensor      # [1, L, 384]
    mask: Tensor         # [1, L] bool
    caption: str
    sigma_range: tuple[float, float] = (0.2, 0.8)
    info: dict[str, Any] | None = None

    def velocity(self, x: Tensor, sigma: Tensor) -> Tensor:
        b = x.shape[0]
        return self.dit(x, sigma * FLOW_MULTIPLIER, self.context.expand(b, -1, -1), self.mask.expand(b, -1))

    def sds_gradient(self, z: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """g = w(σ)(ε̂ − ε) [B, T, 4, 16, 16] for latents ``z`` (no graph) and the plain error ‖ε̂ − ε‖² per clip [B]."""
        b = z.shape[0]
        lo, hi = self.sigma_range
        sigma = lo + (hi - lo) * torch.rand(b, generator=gen)
        eps = torch.randn(z.shape, generator=gen)
        with torch.no_grad():
            x = (1 - sigma.view(-1, 1, 1, 1, 1)) * z.detach() + sigma.view(-1, 1, 1, 1, 1) * eps
            _, eps_hat = velocity_to_x0_eps(self.velocity(x, sigma), x, sigma)
            g = eps_hat - eps                                     # w(σ) = 1
        return g, g.pow(2).mean(dim=(1, 2, 3, 4))

    def sds_surrogate(self, frames: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Surrogate loss per clip [B] whose gradient through ``frames`` [B, T, H, W, 3] is the SDS gradient
        (module docstring; latent elements averaged), and the denoising error per clip [B] (no graph)."""
        z = encode(self.vae, self.vae_scale, frames)
        g, error = self.sds_gradient(z, gen)
        return sds_loss(z, g).mean(dim=(1, 2, 3, 4)), error

    @torch.no_grad()
    def denoising_score(self, frames: Tensor, seed: int = 0, draws: int = 4) -> Tensor:
        """Mean ‖ε̂ − ε‖² per clip [B] over ``draws`` fixed (σ, ε) draws on an evenly spaced σ grid: lower is more
        like the personalised motion (the flow-matching loss of the render)."""
        z = encode(self.vae, self.vae_scale, frames)
        gen = torch.Generator().manual_seed(seed)
        lo, hi = self.sigma_range
        total = torch.zeros(z.shape[0])
        for k in range(draws):
            sigma = torch.full((z.shape[0],), lo + (hi - lo) * (k + 0.5) / draws)
            eps = torch.randn(z.shape[1:], generator=gen).expand_as(z)    # the same noise for every clip
            x = (1 - sigma.view(-1, 1, 1, 1, 1)) * z + sigma.view(-1, 1, 1, 1, 1) * eps
            _, eps_hat = velocity_to_x0_eps(self.velocity(x, sigma), x, sigma)
            total += (eps_hat - eps).pow(2).mean(dim=(1, 2, 3, 4))
        return total / draws


def sds_loss(z: Tensor, g: Tensor) -> Tensor:
    """½ (z − sg(z − g))² elementwise: its gradient in ``z`` is ``g`` (the SDS surrogate)."""
    return 0.5 * (z - (z - g).detach()).pow(2)


def lora_dit(base: nn.Module, rank: int) -> nn.Module:
    """A copy of ``base`` with LoRA adapters (rank ``rank``) on every attention projection; only they train."""
    dit = copy.deepcopy(base).requires_grad_(False)
    return add_lora(dit, rank, LORA_TARGETS)


def personalise(model: Any, clips: Tensor, caption: str, config: PersonaliseConfig = PersonaliseConfig(),
                run_dir: Path | None = None, max_seconds: float | None = None) -> tuple[MotionPrior, list[float]]:
    """Stage A: LoRA fine-tune of a copy of ``model.dit`` (a :class:`~fewstep.nodes.zoo.video.model.VideoModel`)
    on ``clips`` [N, T, H, W, 3] with ``caption``, by the shared loop (resumes from ``run_dir``'s latest
    checkpoint; ``model`` itself is never changed). Returns the prior and the loss of every step."""
    dit = lora_dit(model.dit, config.rank).train()
    with torch.no_grad():
        latents = encode(model.vae, model.vae_scale, clips.float())
    context, mask = model.encode_text([caption])
    params = list(trainable_parameters(dit).values())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    n = latents.shape[0]

    def step_fn(step: int, gen: torch.Generator) -> Tensor:
        index = torch.randint(0, n, (config.batch,), generator=gen)
        z = latents[index]
        sigma = torch.rand(config.batch, generator=gen)
        eps = torch.randn(z.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1, 1)
        v = dit(((1 - s) * z + s * eps), sigma * FLOW_MULTIPLIER, context.expand(config.batch, -1, -1),
                mask.expand(config.batch, -1))
        return F.mse_loss(v, eps - z)

    ckpt = Checkpointer(Path(run_dir), every=100) if run_dir is not None else None
    # the run's identity (a resume must match it); ``steps`` is left out so a longer run continues a shorter one
    meta = {"caption": caption, "clips": int(n), **{k: list(v) if isinstance(v, tuple) else v
                                                    for k, v in asdict(config).items() if k != "steps"}}
    spec = FitSpec(total_steps=config.steps, seed=config.seed, lr_at=lambda step: config.lr, grad_clip=1.0,
                   checkpointer=ckpt, meta=meta, max_seconds=max_seconds)
    start = time.process_time()
    state = fit(dit, optimizer, step_fn, spec)   # reports loss / step as training progress in a graph
    dit.eval().requires_grad_(False)
    info = {"steps": config.steps, "steps_done": state.step, "resumed_from": state.resumed_from, "cpu_seconds": time.process_time() - start,
            "final_loss": sum(state.losses[-20:]) / max(1, len(state.losses[-20:])), **meta}
    return MotionPrior(dit, model.vae, model.vae_scale, context, mask, caption, info=info), state.losses


def base_prior(model: Any, caption: str) -> MotionPrior:
    """The built-in DiT without personalisation, as a :class:`MotionPrior` (the ablation's baseline)."""
    context, mask = model.encode_text([caption])
    return MotionPrior(model.dit, model.vae, model.vae_scale, context, mask, caption, info={"personalised": False})
