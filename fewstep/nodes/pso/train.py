"""PSO runs: configuration + presets, the per-step functions of every mode, and the resumable loop glue.

Modes (one :class:`PSOConfig` field):
    * ``online``        — two walks per prompt from the student-as-Gaussian-policy, winner by reward, clipped
      log-ratio pairwise loss against the reference (LoRA off) (:func:`online_step`);
    * ``offline``       — target latents x⁺ vs the original student's own samples x⁻ at one shared (ε, t) on the
      student's step grid, x0-space errors, hinge or DPO (:func:`offline_step`);
    * ``naive_online``  — the baseline of the table: the same walks and rewards, but the plain denoising loss on
      each pair's winner (rejection-sampling / reward-weighted regression fine-tuning);
    * ``naive_offline`` — the plain denoising loss on the target latents (DreamBooth without prior).
Everything is network-agnostic (:class:`~nodes.core.train.vp.VPNet` views): the toy of ``fewstep/nodes/core/train/toy.py`` and the
built-in UNet run the same code. Step n draws all its randomness from ``step_generator(seed, n)`` (core trainer),
so runs are deterministic and a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from fewstep.nodes.core.train.distributed import local_batch_size
from fewstep.nodes.core.train.loop import (
    Checkpointer,
    FitSpec,
    TrainState,
    config_fingerprint,
    fit,
    trainable_parameters,
)
from fewstep.nodes.core.train.prompts import PromptPool
from fewstep.nodes.core.train.vp import Cond, VPNet, expand_batch, repeat_batch
from fewstep.nodes.pso.losses import DiffusionLoss, OfflinePSOLoss, OnlinePSOLoss, preference, x0_error
from fewstep.nodes.pso.policy import rollout, transition_log_probs

MODES = ("online", "offline", "naive_online", "naive_offline")
Reward = Callable[[Tensor, list[str]], Tensor]       # (IMAGE [B,H,W,C] in 0..1, prompts) -> [B]
Decode = Callable[[Tensor], Tensor]                  # latents [B, ...] -> what the reward reads


@dataclass(frozen=True)
class PSOConfig:
    """Hyperparameters of one PSO (or baseline) run; see :data:`PRESETS` for the papers' values, scaled.

    Args:
        mode: online | offline | naive_online | naive_offline.
        steps / batch_size / lr / grad_clip / seed: AdamW (weight decay 0), constant lr. ``batch_size`` is the
            prompts per step online (two walks each) and the (x⁺, x⁻) pairs per step offline.
        lora_rank: LoRA rank r of the adapters trained on the frozen student (paper: 16).
        timesteps: the student's sampler grid (MLCM 4 steps: 999, 749, 499, 124); online walks use it, offline
            draws t from it (the paper restricts t to the distilled grid).
        beta / clip / tie: online β, ratio clamp ε, reward tie margin.
        beta_offline / prior_weight / objective / weighting / num_negatives: offline β, λ_prior, hinge | dpo, the
            error weighting (snr | none) and how many x⁻ are sampled once from the original student.
    """

    mode: str = "online"
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    lora_rank: int = 16
    timesteps: tuple[int, ...] = (999, 749, 499, 124)
    beta: float = 50.0
    clip: float = 0.1
    tie: float = 0.0
    beta_offline: float = 5.0
    prior_weight: float = 0.5
    objective: str = "hinge"
    weighting: str = "snr"
    num_negatives: int = 20

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"PSOConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.steps < 1 or self.batch_size < 1 or self.lora_rank < 0:
            raise ValueError(f"PSOConfig: steps, batch_size must be >= 1 and lora_rank >= 0 (got {self.steps}, "
                             f"{self.batch_size}, {self.lora_rank})")
        ts = list(self.timesteps)
        if not ts or ts != sorted(ts, reverse=True) or len(set(ts)) != len(ts):
            raise ValueError(f"PSOConfig.timesteps must be strictly decreasing, got {self.timesteps}")
        if self.mode in ("online", "naive_online") and len(ts) < 2:
            raise ValueError("PSOConfig: online PSO needs a sampler of >= 2 steps (a 1-step walk has no "
                             "stochastic transition)")

    def fingerprint(self) -> str:
        """8 hex digits naming this configuration (part of the run folder; a resume needs the same one)."""
        return config_fingerprint(asdict(self))


# PSO's values (methods.md §5): online β 50, ε 0.1, LoRA r 16 (lr 1e-5 with 8-bit Adam on SDXL); offline β 5,
# λ_prior 0.5, lr 2e-4, 20 negatives. Our student is ~350x smaller and each run is seconds long, so the online lr
# is raised to 3e-4 (the MLCM students' LoRA lr; the ratio clamp, not the lr, bounds how far a transition may move
# from the reference). The naive baselines use the same lr, batch and step count as their PSO run.
PRESETS: dict[str, PSOConfig] = {
    "online":        PSOConfig(mode="online", lr=3e-4),
    "naive_online":  PSOConfig(mode="naive_online", lr=3e-4),
    "offline":       PSOConfig(mode="offline", lr=2e-4, batch_size=8, steps=600),
    "naive_offline": PSOConfig(mode="naive_offline", lr=2e-4, batch_size=8, steps=600),
}


def preset(name: str, **changes: Any) -> PSOConfig:
    """A named preset with some fields changed (clear error for unknown names)."""
    if name not in PRESETS:
        raise ValueError(f"unknown PSO preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **changes)


@dataclass
class StepLog:
    """Side statistics of the steps run in this process (losses live in the trainer's state)."""

    reward: list[float]
    win_margin: list[float]

    @classmethod
    def empty(cls) -> StepLog:
        return cls([], [])


def _pairs(policy: VPNet, pool: PromptPool, cfg: PSOConfig, reward: Reward, decode: Decode,
           gen: torch.Generator, log: StepLog) -> tuple[Any, Any, Tensor, Tensor]:
    """Two walks per prompt of a batch: (batch, trajectory of the 2B walks, cond [2B, ...], rewards [2B])."""
    batch = pool.batch(cfg.batch_size, gen)
    cond2 = repeat_batch(batch.cond, 2)                                             # [2B, ...]: A then B
    noise = torch.randn((2 * cfg.batch_size, *pool.latent_shape), generator=gen, device=gen.device)
    traj = rollout(policy, noise.to(pool.cond.device), list(cfg.timesteps), cond2, gen)
    with torch.no_grad():
        r = reward(decode(traj.x0), list(batch.prompts) * 2).float()               # [2B] (or [2B, K])
    log.reward.append(float(r.mean()))
    log.win_margin.append(float((r[:cfg.batch_size] - r[cfg.batch_size:]).abs().mean()))
    return batch, traj, cond2, r


def online_step(policy: VPNet, reference: VPNet, pool: PromptPool, cfg: PSOConfig, reward: Reward,
                decode: Decode, log: StepLog) -> Callable[[torch.Generator], Tensor]:
    """Online PSO: sample pairs with the current policy, rank by reward, pairwise clipped log-ratio loss."""
    loss_fn = OnlinePSOLoss(cfg.beta, cfg.clip)

    def step(gen: torch.Generator) -> Tensor:
        _, traj, cond2, r = _pairs(policy, pool, cfg, reward, decode, gen, log)
        b = cfg.batch_size
        pref = preference(r[:b], r[b:], cfg.tie)                                   # [B, 2]
        with torch.no_grad():
            ref_logp = transition_log_probs(reference, traj, cond2)                # [2B, J]
        log_ratio = transition_log_probs(policy, traj, cond2) - ref_logp           # [2B, J]
        return loss_fn(log_ratio[:b], log_ratio[b:], pref).mean()
    return step


def naive_online_step(policy: VPNet, pool: PromptPool, cfg: PSOConfig, reward: Reward, decode: Decode,
                      log: StepLog) -> Callable[[torch.Generator], Tensor]:
    """Baseline: the same pairs, the plain denoising loss on each pair's winner (ties: sample A)."""
    loss_fn = DiffusionLoss()

    def step(gen: torch.Generator) -> Tensor:
        batch, traj, _, r = _pairs(policy, pool, cfg, reward, decode, gen, log)
        b = cfg.batch_size
        a_wins = preference(r[:b], r[b:], cfg.tie)[:, 0] >= 0                     # [B]
        winners = torch.where(a_wins.view(-1, *[1] * (traj.x0.ndim - 1)), traj.x0[:b], traj.x0[b:])
        return loss_fn(policy, winners, batch.cond, gen).mean()
    return step


@dataclass
class OfflineData:
    """Offline pairs: target latents x⁺ [N, ...], reference latents x⁻ [M, ...], the concept's cond [1, ...]."""

    positives: Tensor
    negatives: Tensor | None
    cond: Cond


@torch.no_grad()
def sample_negatives(reference: VPNet, cond: Cond, n: int, latent_shape: tuple[int, ...],
                     timesteps: list[int], seed: int) -> Tensor:
    """x⁻: ``n`` samples of the concept prompt from the *original* student, drawn once (seeded by ``seed``)."""
    gen = torch.Generator(cond.device).manual_seed(int(seed) + 7919)
    noise = torch.randn((n, *latent_shape), generator=gen, device=cond.device)
    return rollout(reference, noise, timesteps, expand_batch(cond, n), gen).x0


def offline_step(policy: VPNet, reference: VPNet, data: OfflineData, cfg: PSOConfig
                 ) -> Callable[[torch.Generator], Tensor]:
    """Offline PSO: a random (x⁺, x⁻) pair per row, one shared ε and t from the student's grid."""
    loss_fn = OfflinePSOLoss(cfg.beta_offline, cfg.prior_weight, cfg.objective)
    grid = torch.tensor(cfg.timesteps, device=data.positives.device)
    if data.negatives is None:
        raise ValueError("offline PSO needs reference samples (OfflineData.negatives)")

    def step(gen: torch.Generator) -> Tensor:
        b, dev = cfg.batch_size, data.positives.device
        pos = data.positives[torch.randint(len(data.positives), (b,), generator=gen, device=gen.device).to(dev)]
        neg = data.negatives[torch.randint(len(data.negatives), (b,), generator=gen, device=gen.device).to(dev)]
        t = grid[torch.randint(len(grid), (b,), generator=gen, device=gen.device).to(dev)]
        eps = torch.randn(pos.shape, generator=gen, device=gen.device).to(dev)
        args = (torch.cat([pos, neg]), torch.cat([t, t]), torch.cat([eps, eps]), expand_batch(data.cond, 2 * b))
        m_pos, m_neg = x0_error(policy, *args, weighting=cfg.weighting).chunk(2)
        refs: tuple[Tensor, ...] = ()
        if loss_fn.needs_reference:
            with torch.no_grad():
                refs = x0_error(reference, *args, weighting=cfg.weighting).chunk(2)
        return loss_fn(m_pos, m_neg, *refs).mean()
    return step


def naive_offline_step(policy: VPNet, data: OfflineData, cfg: PSOConfig) -> Callable[[torch.Generator], Tensor]:
    """Baseline: the plain denoising loss on the target latents (t uniform over all 1000 timesteps)."""
    loss_fn = DiffusionLoss()

    def step(gen: torch.Generator) -> Tensor:
        dev = data.positives.device
        pos = data.positives[torch.randint(len(data.positives), (cfg.batch_size,), generator=gen,
                                           device=gen.device).to(dev)]
        return loss_fn(policy, pos, expand_batch(data.cond, cfg.batch_size), gen).mean()
    return step


def make_step(cfg: PSOConfig, policy: VPNet, reference: VPNet, *, pool: PromptPool | None = None,
              reward: Reward | None = None, decode: Decode | None = None, data: OfflineData | None = None,
              log: StepLog | None = None) -> Callable[[torch.Generator], Tensor]:
    """The step function of ``cfg.mode`` (clear errors for missing inputs)."""
    log = log if log is not None else StepLog.empty()
    cfg = replace(cfg, batch_size=local_batch_size(cfg.batch_size))   # this process's share (data-parallel)
    if cfg.mode in ("online", "naive_online"):
        if pool is None or reward is None or decode is None:
            raise ValueError(f"PSO mode {cfg.mode!r} needs prompts, a reward and a decoder")
        if cfg.mode == "online":
            return online_step(policy, reference, pool, cfg, reward, decode, log)
        return naive_online_step(policy, pool, cfg, reward, decode, log)
    if data is None:
        raise ValueError(f"PSO mode {cfg.mode!r} needs target latents (OfflineData)")
    if cfg.mode == "offline":
        return offline_step(policy, reference, data, cfg)
    return naive_offline_step(policy, data, cfg)


def train(net: nn.Module, step: Callable[[torch.Generator], Tensor], cfg: PSOConfig, *, device: str = "cpu",
          checkpointer: Checkpointer | None = None, autocast: torch.dtype | None = None,
          max_seconds: float | None = None, total_steps: int | None = None, meta: dict[str, Any] | None = None,
          preview_fn: Callable[[int], Any] | None = None, preview_every: int = 0) -> TrainState:
    """Run the optimizer over ``net``'s trainable parameters (the LoRA adapters) with core's resumable ``fit``.

    ``total_steps`` overrides ``cfg.steps`` (the baseline gets the PSO run's step count); ``max_seconds`` stops on
    time (with a checkpoint), ``autocast`` runs the networks in e.g. bf16 while the adapters stay float32.
    """
    params = list(trainable_parameters(net).values())
    if not params:
        raise ValueError("PSO train: the network has no trainable parameters (LoRA not injected?)")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    dev_type = torch.device(device).type

    def step_fn(_: int, gen: torch.Generator) -> Tensor:
        with torch.autocast(device_type=dev_type, dtype=autocast, enabled=autocast is not None):
            return step(gen)

    spec = FitSpec(total_steps=total_steps or cfg.steps, seed=cfg.seed, lr_at=lambda _: cfg.lr,
                   grad_clip=cfg.grad_clip, device=device, checkpointer=checkpointer,
                   meta={"config": json.loads(json.dumps(asdict(cfg))), **(meta or {})}, max_seconds=max_seconds,
                   preview_every=preview_every)
    return fit(net, optimizer, step_fn, spec, preview_fn=preview_fn)
