"""R0's training objective as one callable: regularised reward maximisation through the few-step sampler.

    loss(θ) = − J(G_θ(z, c), c) − w_mid · mean_k J(x̂0_k, c) + λ drift(θ)

J is the weighted reward objective of ``nodes.core.rewards.WeightedRewards`` (its gradient normalised per
reward when the R0 regulariser is on), G_θ the η-DDIM rollout of ``nodes.r0.generator`` decoded through the
frozen VAE *with* gradients, x̂0_k the earlier steps' clean estimates (R0+'s intermediate supervision,
w_mid = 0 turns it off), drift the relative weight distance of ``nodes.r0.regularizers``. No data, no
teacher targets: rewards are the only signal (R0, Luo et al. 2025, §4; methods.md §8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fewstep.nodes.core.train.vp import Cond
from fewstep.nodes.r0.generator import R0_TIMESTEPS, rollout
from fewstep.nodes.r0.regularizers import WeightDrift


@dataclass
class R0Batch:
    """One step's inputs: prompts and their conditioning [B, ...], the empty prompt's [1, ...], the latent shape,
    and the step's generator (every random draw comes from it)."""

    prompts: list[str]
    cond: Cond
    uncond: Cond
    shape: tuple[int, ...]
    generator: torch.Generator


@dataclass
class R0Loss:
    """Callable ``loss(student, batch) -> scalar``; the last call's numbers are in ``last`` (for progress).

    Args:
        objective: ``objective(images [B,H,W,3], prompts) -> (scalar J, {reward: mean})`` — a
            ``WeightedRewards.objective``.
        decode: scaled latents [B,C,h,w] -> IMAGE [B,H,W,3] in 0..1, differentiable (the frozen VAE).
        timesteps: the generator's steps (highest first).
        guidance: CFG scale inside the generator (1 = none).
        random_eta: η ~ U[0,1] per sample (R0's regulariser) instead of the fixed ``eta``.
        eta: the fixed η when ``random_eta`` is off (and at test).
        drift: the weight regulariser (None = off); ``weight_reg`` is its λ.
        intermediate_weight: R0+'s w_mid (0 = plain R0).
        grad_steps: back-propagate through only the last this many sampler steps (None = all).
        reward_chunk: evaluate the rewards (and their backward) on this many images at a time (0 = all at
            once); the gradient is the same, the reward networks' activation memory is a chunk's.
    """

    objective: Callable[[Tensor, list[str]], tuple[Tensor, dict[str, float]]]
    decode: Callable[[Tensor], Tensor]
    timesteps: Sequence[int] = R0_TIMESTEPS
    guidance: float = 1.0
    random_eta: bool = True
    eta: float = 0.0
    drift: WeightDrift | None = None
    weight_reg: float = 0.0
    intermediate_weight: float = 0.0
    grad_steps: int | None = None
    reward_chunk: int = 0
    last: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"R0Loss: eta must be in [0, 1], got {self.eta}")
        if self.weight_reg < 0 or self.intermediate_weight < 0:
            raise ValueError(f"R0Loss: weight_reg and intermediate_weight must be >= 0 "
                             f"(got {self.weight_reg}, {self.intermediate_weight})")
        if self.weight_reg > 0 and self.drift is None:
            raise ValueError("R0Loss: weight_reg > 0 needs a WeightDrift (drift=...)")

    def __call__(self, student, batch: R0Batch) -> Tensor:
        gen, dev = batch.generator, batch.cond.device
        noise = torch.randn(batch.shape, generator=gen, device=gen.device).to(dev)            # [B,C,h,w]
        if self.random_eta:
            eta = torch.rand(batch.shape[0], generator=gen, device=gen.device).to(dev)        # [B] ~ U[0,1]
        else:
            eta = torch.full((batch.shape[0],), self.eta, device=dev)
        out = rollout(student, noise, self.timesteps, batch.cond, batch.uncond, self.guidance, eta, gen,
                      self.grad_steps)
        reward, means = self._objective(self.decode(out.x0), batch.prompts)
        loss = -reward
        if self.intermediate_weight > 0 and out.intermediate:
            mid = [self._objective(self.decode(x0), batch.prompts)[0] for x0 in out.intermediate]
            loss = loss - self.intermediate_weight * torch.stack(mid).mean()
        drift = self.drift() if self.drift is not None else None
        if drift is not None and self.weight_reg > 0:
            loss = loss + self.weight_reg * drift
        self.last = {"reward": float(reward.detach()), **{f"r_{k}": v for k, v in means.items()}}
        if drift is not None:
            self.last["drift"] = float(drift.detach())
        return loss

    def _objective(self, images: Tensor, prompts: list[str]) -> tuple[Tensor, dict[str, float]]:
        """``objective`` evaluated ``reward_chunk`` images at a time on a detached copy, then re-attached.

        J is a mean over images, so J = Σ_i (n_i / B) J_i and ∂J/∂images is the sum of the chunks' gradients;
        the returned scalar has value J and gradient ∂J/∂images (a first-order surrogate, exact for the
        backward through the decoder and the generator)."""
        batch = images.shape[0]
        if self.reward_chunk <= 0 or self.reward_chunk >= batch:
            return self.objective(images, prompts)
        leaf = images.detach().requires_grad_(True)
        value, means = 0.0, {}
        for i in range(0, batch, self.reward_chunk):
            share = min(self.reward_chunk, batch - i) / batch
            with torch.enable_grad():
                part, part_means = self.objective(leaf[i:i + self.reward_chunk], prompts[i:i + self.reward_chunk])
                (part * share).backward()                                   # accumulates ∂J/∂images in leaf.grad
            value += float(part.detach()) * share
            for k, v in part_means.items():
                means[k] = means.get(k, 0.0) + v * share
        surrogate = (images.float() * leaf.grad.float()).sum()
        return surrogate - surrogate.detach() + value, means
