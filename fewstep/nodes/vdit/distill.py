"""Efficient-vDiT's two training stages on the built-in video DiT: MLCD (stage 1) and sparse KD (stage 3).

Both are small loss objects ``loss(student, batch, *, teacher, target=None) -> per-sample loss [B]`` over
:class:`~fewstep.nodes.zoo.video.dit.VideoDiT` networks (``dit(x, sigma * 1000, ctx, mask) -> v``); the flow
consistency pieces (segments, DDIM jumps, data-free teacher states) are core's ``flow_consistency``.

- :class:`MLCDVideoLoss` (paper §3, "the same as MLCM's Eq. 6"): a state ``x_m`` at teacher grid point
  sigma_m in segment s, one guided teacher Euler step to the next grid point sigma_n, and
  ``|| g_theta(x_m, sigma_m) - sg g_target(x_n, sigma_n) ||^2`` with ``g`` the DDIM jump to the segment's
  lower edge using the network's x0 = x - sigma v. The teacher's CFG is distilled in: the student runs
  unguided (one DiT row per step instead of two).
- :class:`SparseKDLoss` (paper stage 3): the tile-sparse student (initialised from the MLCD student, per-layer
  masks from the search) matches the dense MLCD student's velocity on the states the few-step sampler
  visits, plus the mean squared difference of every layer's self-attention output (attention distillation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fewstep.nodes.core.train.flow_consistency import (
    FlowSegments,
    flow_euler_step,
    flow_segment_jump,
    flow_teacher_states,
)
from fewstep.nodes.core.train.flow_param import flow_noised, velocity_to_x0
from fewstep.nodes.zoo.video.model import FLOW_MULTIPLIER

STATE_SOURCES = ("teacher", "real")
KD_STATE_SOURCES = ("student", "real")


@dataclass
class VideoBatch:
    """One training batch of video latents.

    Args:
        context / mask: text token states ``[B, L, 384]`` and their mask ``[B, L]`` bool.
        uncond / uncond_mask: the empty prompt's tokens ``[1, L0, 384]`` / ``[1, L0]`` (teacher CFG).
        shape: latent shape ``[B, T, C, h, w]``.
        generator: every random draw of the step (seeded per step: resumable runs).
        latents: clean latents ``[B, T, C, h, w]`` of real clips (``state_source="real"``), else None.
    """

    context: Tensor
    mask: Tensor
    uncond: Tensor
    uncond_mask: Tensor
    shape: tuple[int, ...]
    generator: torch.Generator
    latents: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.context.device

    def noise(self) -> Tensor:
        return torch.randn(self.shape, generator=self.generator, device=self.generator.device).to(self.device)


def velocity(dit: nn.Module, x: Tensor, sigma: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
    """The DiT's flow velocity ``v = eps - x0`` at per-sample ``sigma`` [B] (timestep input sigma * 1000)."""
    return dit(x, sigma * FLOW_MULTIPLIER, context, mask)


def _pad(a: Tensor, m: Tensor, length: int) -> tuple[Tensor, Tensor]:
    pad = length - a.shape[1]
    if pad <= 0:
        return a, m
    return torch.cat([a, a.new_zeros(a.shape[0], pad, a.shape[2])], 1), torch.cat([m, m.new_zeros(m.shape[0], pad)], 1)


def guided_velocity(dit: nn.Module, x: Tensor, sigma: Tensor, batch: VideoBatch, scale: float) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022) on the velocity: ``v_u + s (v_c - v_u)``, both rows in one
    call (as ``zoo.video.model.DiTModelFn``); ``scale = 1`` runs the conditional row only."""
    if scale == 1.0:
        return velocity(dit, x, sigma, batch.context, batch.mask)
    b = x.shape[0]
    length = max(batch.context.shape[1], batch.uncond.shape[1])
    ctx, mask = _pad(batch.context, batch.mask, length)
    unc, umask = _pad(batch.uncond.expand(b, -1, -1), batch.uncond_mask.expand(b, -1), length)
    v_u, v_c = velocity(dit, torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([unc, ctx]),
                        torch.cat([umask, mask])).chunk(2)
    return v_u + scale * (v_c - v_u)


def x0_of(dit: nn.Module, batch: VideoBatch):  # noqa: ANN201 - a closure for flow_segment_jump
    """``x0(x, sigma) = x - sigma v(x, sigma)``: the network as an x0 predictor (unguided, the student)."""
    def fn(x: Tensor, sigma: Tensor) -> Tensor:
        return velocity_to_x0(velocity(dit, x, sigma, batch.context, batch.mask), x, sigma)
    return fn


@dataclass
class MLCDVideoLoss:
    """Stage 1: multistep latent consistency distillation of a flow video DiT (MLCM eq. 6 on the flow path).

    Args:
        segments: the teacher grid and its segments (50 steps, 10 segments: a 10-step student).
        guidance: the teacher's CFG scale (the built-in model samples at 4); distilled into the student.
        state_source: "teacher": data-free states from the guided teacher's Euler trajectories from noise
            (TLCM Alg. 1); "real": noised latents of real clips (``batch.latents``), Song et al.'s CD.
        state_stride: grid steps per teacher step of the data-free trajectories (segment length = 5).
    """

    segments: FlowSegments
    guidance: float = 4.0
    state_source: str = "teacher"
    state_stride: int = 5

    def __post_init__(self) -> None:
        if self.state_source not in STATE_SOURCES:
            raise ValueError(f"MLCD state_source must be one of {STATE_SOURCES}, got {self.state_source!r}")

    def states(self, teacher: nn.Module, k: Tensor, sigma_m: Tensor, batch: VideoBatch) -> Tensor:
        noise = batch.noise()
        if self.state_source == "real":
            if batch.latents is None:
                raise ValueError("MLCD with state_source='real' needs real clip latents in the batch")
            return flow_noised(batch.latents, sigma_m, noise)
        return flow_teacher_states(lambda x, s: guided_velocity(teacher, x, s, batch, self.guidance), noise, k,
                                   self.segments.grid(), self.state_stride)

    def __call__(self, student: nn.Module, batch: VideoBatch, *, teacher: nn.Module,
                 target: nn.Module | None = None) -> Tensor:
        k, sigma_m, sigma_n, sigma_lo = self.segments.draw(batch.shape[0], batch.generator, batch.device)
        with torch.no_grad():
            x_m = self.states(teacher, k, sigma_m, batch)
            x_n = flow_euler_step(guided_velocity(teacher, x_m, sigma_m, batch, self.guidance), x_m, sigma_m, sigma_n)
            tgt = flow_segment_jump(x0_of(target if target is not None else student, batch), x_n, sigma_n, sigma_lo)
        pred = flow_segment_jump(x0_of(student, batch), x_m, sigma_m, sigma_lo)
        return (pred - tgt).flatten(1).pow(2).mean(1)


@contextmanager
def recorded_attention(dit: nn.Module) -> Iterator[list[Tensor]]:
    """Inside the block: every forward of ``dit`` appends each block's self-attention output ``[B, N, D]``
    (``block.attn1``, after its output projection) to the yielded list, layer by layer."""
    outputs: list[Tensor] = []
    handles = [block.attn1.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for block in dit.blocks]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class SparseKDLoss:
    """Stage 3: knowledge distillation of the sparse student from the dense MLCD student.

    ``|| v_sparse(x, sigma) - v_dense(x, sigma) ||^2 + attention_weight * mean_l || a_l^sparse - a_l^dense ||^2``
    (per-sample means; ``a_l`` = layer l's self-attention output). Gradients reach the sparse student only:
    the dense teacher runs under ``no_grad``.

    Args:
        segments: the MLCD student's segments (its sampler's boundaries are the KD states' sigmas).
        attention_weight: weight of the per-layer attention-output term (0 = output distillation only).
        state_source: "student": ``x`` at a random segment boundary k of the dense student's own
            deterministic k-jump trajectory from noise (exactly the states sampling visits); "real": real
            clip latents noised to a random boundary.
    """

    segments: FlowSegments
    attention_weight: float = 1.0
    state_source: str = "student"

    def __post_init__(self) -> None:
        if self.state_source not in KD_STATE_SOURCES:
            raise ValueError(f"KD state_source must be one of {KD_STATE_SOURCES}, got {self.state_source!r}")
        if self.attention_weight < 0:
            raise ValueError(f"attention_weight must be >= 0, got {self.attention_weight}")

    @torch.no_grad()
    def states(self, teacher: nn.Module, batch: VideoBatch) -> tuple[Tensor, Tensor]:
        """(x [B, ...], sigma [B]) at boundary k ~ U{0..segments-1} of each sample."""
        bounds = self.segments.boundaries().to(batch.device)
        n = batch.shape[0]
        k = torch.randint(0, self.segments.segments, (n,), generator=batch.generator,
                          device=batch.generator.device).to(batch.device)
        noise = batch.noise()
        if self.state_source == "real":
            if batch.latents is None:
                raise ValueError("KD with state_source='real' needs real clip latents in the batch")
            return flow_noised(batch.latents, bounds[k], noise), bounds[k]
        x, idx = noise, torch.zeros_like(k)
        for _ in range(int(k.max())):                                     # jump boundary to boundary
            nxt = torch.minimum(idx + 1, k)
            x = flow_euler_step(velocity(teacher, x, bounds[idx], batch.context, batch.mask), x, bounds[idx], bounds[nxt])
            idx = nxt
        return x, bounds[k]

    def __call__(self, student: nn.Module, batch: VideoBatch, *, teacher: nn.Module,
                 target: nn.Module | None = None) -> Tensor:
        x, sigma = self.states(teacher, batch)
        with torch.no_grad(), recorded_attention(teacher) as dense_attn:
            v_dense = velocity(teacher, x, sigma, batch.context, batch.mask)
        with recorded_attention(student) as sparse_attn:
            v_sparse = velocity(student, x, sigma, batch.context, batch.mask)
        loss = (v_sparse - v_dense).flatten(1).pow(2).mean(1)
        if self.attention_weight > 0:
            per_layer = [(a - b).flatten(1).pow(2).mean(1) for a, b in zip(sparse_attn, dense_attn, strict=True)]
            loss = loss + self.attention_weight * torch.stack(per_layer).mean(0)
        return loss
