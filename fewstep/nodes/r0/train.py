"""R0 runs: the configuration (with one toggle per regulariser), the ablation arms, the training-loop glue.

:func:`train_r0` is network-agnostic: the generator is a :class:`~nodes.core.train.vp.VPNet` view, prompts come from
an ``nodes.mlcm.train.PromptPool`` (encoded once), rewards are a ``WeightedRewards``; the loop is
``nodes.core.train.loop.fit`` (checkpoints, resume, deterministic steps, live progress).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from fewstep.nodes.core.train.adapter import LORA_TARGETS
from fewstep.nodes.core.train.distributed import local_batch_size
from fewstep.nodes.core.train.loop import (
    Checkpointer,
    FitSpec,
    TrainState,
    add_lora,
    config_fingerprint,
    fit,
    report_training,
    trainable_parameters,
)
from fewstep.nodes.core.train.prompts import PromptPool
from fewstep.nodes.core.train.vp import VPNet
from fewstep.nodes.r0.generator import trailing_timesteps
from fewstep.nodes.r0.loss import R0Batch, R0Loss
from fewstep.nodes.r0.regularizers import WeightDrift


@dataclass(frozen=True)
class R0Config:
    """Hyperparameters of one R0 run (our values: the paper publishes none; see fewstep/nodes/r0/README.md).

    Args:
        steps / batch_size / lr / grad_clip / seed: the optimisation (AdamW, no weight decay, constant lr).
        sampler_steps: K, the generator's steps (trailing grid).  guidance: CFG scale inside the generator.
        weight_reg: λ of λ·‖θ−θ0‖²/‖θ0‖² (0 = off).  random_eta: η ~ U[0,1] in training (else ``eta``).
        eta: fixed η (training without random η, and at test).  normalize_grads: per-reward gradient
            normalisation.  intermediate_weight: R0+'s weight of the rewards on earlier x̂0 (0 = off).
        grad_steps: back-propagate through the last this many sampler steps (0 = all).
        lora_rank: 0 = full fine-tune, else LoRA rank (peft).
        reward_chunk: rewards evaluated this many images at a time (0 = whole batch; same gradient, less memory).
        rewards: (name, weight) of the rewards (names: scorer | probe | saturation).
    """

    steps: int = 400
    batch_size: int = 32
    lr: float = 3e-4
    grad_clip: float = 1.0
    seed: int = 0
    sampler_steps: int = 4
    guidance: float = 5.0
    weight_reg: float = 2000.0
    random_eta: bool = True
    eta: float = 0.0
    normalize_grads: bool = True
    intermediate_weight: float = 0.0
    grad_steps: int = 0
    lora_rank: int = 16
    reward_chunk: int = 0
    rewards: tuple[tuple[str, float], ...] = (("scorer", 1.0), ("probe", 1.0))

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.sampler_steps < 1:
            raise ValueError(f"R0Config: steps, batch_size and sampler_steps must be >= 1 (got {self.steps}, "
                             f"{self.batch_size}, {self.sampler_steps})")
        if not self.rewards:
            raise ValueError("R0Config: rewards is empty (R0 trains on rewards only)")

    @property
    def timesteps(self) -> tuple[int, ...]:
        return trailing_timesteps(self.sampler_steps)

    def fingerprint(self) -> str:
        """8 hex digits naming this configuration (part of the run folder; a resume needs the same one)."""
        return config_fingerprint(asdict(self))


# The ablation of the README table (methods.md §8 "four arms"): each adds one regulariser to the previous.
# All four train on scorer + probe + the hackable saturation reward; "r0" is the shipped student (scorer +
# probe, every regulariser), "r0plus" adds R0+'s intermediate supervision.
_HACK = (("scorer", 1.0), ("probe", 1.0), ("saturation", 1.0))
ARMS: dict[str, R0Config] = {
    "none":      R0Config(weight_reg=0.0, random_eta=False, normalize_grads=False, rewards=_HACK),
    "wreg":      R0Config(weight_reg=2000.0, random_eta=False, normalize_grads=False, rewards=_HACK),
    "wreg_eta":  R0Config(weight_reg=2000.0, random_eta=True, normalize_grads=False, rewards=_HACK),
    "full":      R0Config(weight_reg=2000.0, random_eta=True, normalize_grads=True, rewards=_HACK),
    "r0":        R0Config(),
    "r0plus":    R0Config(intermediate_weight=0.5),
}


def arm(name: str, **changes: Any) -> R0Config:
    """A named arm with some fields changed (clear error for unknown names)."""
    if name not in ARMS:
        raise ValueError(f"unknown R0 arm {name!r}; choose one of {sorted(ARMS)}")
    return replace(ARMS[name], **changes)


def make_rewards(cfg: R0Config, library: dict[str, Any]) -> Any:
    """The WeightedRewards of ``cfg.rewards`` from ``library`` (name -> Reward instance)."""
    from fewstep.nodes.core.rewards import Term, WeightedRewards

    missing = [name for name, _ in cfg.rewards if name not in library]
    if missing:
        raise ValueError(f"R0: rewards {missing} are not available; have {sorted(library)}")
    return WeightedRewards([Term(name, library[name], w) for name, w in cfg.rewards],
                           normalize_grads=cfg.normalize_grads)


def prepare_student(net: nn.Module, cfg: R0Config) -> nn.Module:
    """Make ``net`` (a UNetAdapter over a fp32 copy of the teacher UNet) trainable: LoRA or every weight."""
    net.train().requires_grad_(True)
    if cfg.lora_rank > 0:
        net.unet = add_lora(net.unet, cfg.lora_rank, LORA_TARGETS)
    return net


def vae_decoder(vae: nn.Module, scale: float) -> Callable[[Tensor], Tensor]:
    """Scaled latents [B,C,h,w] -> IMAGE [B,H,W,3] in 0..1 through a frozen diffusers-style VAE, differentiable."""
    vae.requires_grad_(False)

    def decode(latents: Tensor) -> Tensor:
        dtype = next(vae.parameters()).dtype
        x = vae.decode((latents / scale).to(dtype)).sample.float()                       # [B,3,H,W] in -1..1
        return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)                              # [B,H,W,3]
    return decode


def train_r0(student: VPNet, pool: PromptPool, rewards: Any, decode: Callable[[Tensor], Tensor], cfg: R0Config, *,
             device: str = "cpu", checkpointer: Checkpointer | None = None, autocast: torch.dtype | None = None,
             max_seconds: float | None = None, meta: dict[str, Any] | None = None,
             preview_fn: Callable[[int], Any] | None = None, preview_every: int = 0
             ) -> tuple[TrainState, list[dict[str, float]]]:
    """Run ``cfg.steps`` R0 steps on ``student`` (trainable parameters already marked), resuming if possible.

    Every random draw of step n (prompts, noise, η, η-noise) comes from ``step_generator(cfg.seed, n)``.
    Besides the trainer's loss/lr events, each step reports ``reward`` (the weighted objective J), each
    reward's batch mean (``r_<name>``) and the weight ``drift``; those numbers of every step run in this
    call are returned beside the trainer's state.
    """
    drift = WeightDrift(student.net)
    loss_fn = R0Loss(objective=rewards.objective, decode=decode, timesteps=cfg.timesteps, guidance=cfg.guidance,
                     random_eta=cfg.random_eta, eta=cfg.eta, drift=drift, weight_reg=cfg.weight_reg,
                     intermediate_weight=cfg.intermediate_weight, grad_steps=cfg.grad_steps or None,
                     reward_chunk=cfg.reward_chunk)
    params = list(trainable_parameters(student.net).values())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    history: list[dict[str, float]] = []

    def step_fn(step: int, gen: torch.Generator) -> Tensor:
        b = local_batch_size(cfg.batch_size)                            # this rank's share of the batch
        idx = torch.randint(0, len(pool.prompts), (b,), generator=gen, device=gen.device).cpu()
        batch = R0Batch(prompts=[pool.prompts[i] for i in idx.tolist()], cond=pool.cond[idx.to(pool.cond.device)],
                        uncond=pool.uncond, shape=(b, *pool.latent_shape), generator=gen)
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast, enabled=autocast is not None):
            loss = loss_fn(student, batch)
        history.append(dict(loss_fn.last))
        report_training(step + 1, cfg.steps, loss_fn.last)
        return loss

    spec = FitSpec(total_steps=cfg.steps, seed=cfg.seed, lr_at=lambda step: cfg.lr, grad_clip=cfg.grad_clip,
                   device=device, checkpointer=checkpointer,
                   # through JSON, as the checkpoint stores it (tuples become lists), so a resume matches
                   meta=json.loads(json.dumps({"r0": asdict(cfg), **(meta or {})})),
                   max_seconds=max_seconds, preview_every=preview_every)
    state = fit(student.net, optimizer, step_fn, spec, preview_fn=preview_fn)
    return state, history
