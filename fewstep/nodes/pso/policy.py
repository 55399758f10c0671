"""The few-step student as a Gaussian policy (PSO, Miao et al. 2025, arXiv 2410.03190, §3.3 and the online code).

The multistep consistency sampler of a timestep-distilled student (MLCM / LCM / DMD2) walks timesteps
t_0 > t_1 > ... > t_{n-1}: at each t_j it predicts x̂0 and re-noises it with *fresh* noise,

    x_{j+1} = α_{j+1} x̂0_θ(x_j, t_j) + σ_{j+1} z,    z ~ N(0, I),                  (methods.md §5, online)

so every transition but the last is a Gaussian policy π_θ(x_{j+1} | x_j) = N(α_{j+1} x̂0_θ, σ_{j+1}² I); the last
one outputs x̂0 deterministically and has no likelihood. ``log π`` is the *mean over dimensions* of the Gaussian
log density (the official code's convention, which keeps β = 50 meaningful at any latent size).

A *reference* policy is the same network with its LoRA adapters disabled (:class:`AdaptersOff`), or any frozen
copy (the toy tests).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fewstep.nodes.core.train.vp import Cond, VPNet, bc, repeat_batch


@dataclass
class Trajectory:
    """One batch of sampler walks.

    Args:
        states: [n, B, ...] the state x_j fed to the network at timestep t_j (x_0 = the initial noise).
        x0: [B, ...] the final output x̂0(x_{n-1}, t_{n-1}) (the latents that get decoded).
        timesteps: the n integer timesteps t_0 > ... > t_{n-1}.
    """

    states: Tensor
    x0: Tensor
    timesteps: list[int]

    @property
    def num_transitions(self) -> int:
        """Stochastic transitions x_j -> x_{j+1}: n - 1 (the last step is deterministic)."""
        return len(self.timesteps) - 1


def _full(value: int, n: int, device: torch.device) -> Tensor:
    return torch.full((n,), int(value), device=device, dtype=torch.long)


@torch.no_grad()
def rollout(policy: VPNet, noise: Tensor, timesteps: list[int], cond: Cond,
            generator: torch.Generator | None = None) -> Trajectory:
    """Sample the student's multistep walk from ``noise`` [B, ...] (= x at t_0), recording every state.

    The same walk as core's ``sample_lcm`` on the MLCM milestone SIGMAS (x̂0 without the LCM boundary blend,
    which differs from it by < 1e-5 for t ≥ 19: see ``nodes.core.train.vp.lcm_boundary_scalings``).
    """
    if not timesteps:
        raise ValueError("rollout needs at least one timestep")
    sched, b, x = policy.schedule, noise.shape[0], noise
    states = []
    for j, t_j in enumerate(timesteps):
        states.append(x)
        x0, _ = policy.x0_eps(x, _full(t_j, b, noise.device), cond)
        if j + 1 < len(timesteps):
            s = _full(timesteps[j + 1], b, noise.device)
            z = torch.randn(noise.shape, generator=generator, device=noise.device, dtype=noise.dtype)
            x = bc(sched.alpha_t(s), x0) * x0.to(noise.dtype) + bc(sched.sigma_t(s), x0) * z
    return Trajectory(torch.stack(states), x0.float(), list(timesteps))


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Mean over non-batch dims of log N(x; mean, std² I): -(x-μ)²/(2 std²) - log std - ½ log 2π. Returns [B].

    ``std`` [B] (one noise level per sample). Computed in float32.
    """
    x, mean = x.float(), mean.float()
    s = bc(std.float(), x)
    logp = -((x - mean) ** 2) / (2 * s**2) - s.log() - 0.5 * math.log(2 * math.pi)
    return logp.flatten(1).mean(1)


def transition_log_probs(policy: VPNet, traj: Trajectory, cond: Cond) -> Tensor:
    """log π(x_{j+1} | x_j) of every stochastic transition of ``traj``, [B, n-1] (one batched forward).

    Gradients flow into ``policy``'s parameters through the mean α_{j+1} x̂0_θ(x_j, t_j); the states are data.
    """
    n_tr = traj.num_transitions
    if n_tr < 1:
        raise ValueError("a 1-step walk has no stochastic transition: PSO's online policy needs >= 2 steps")
    b, dev = traj.states.shape[1], traj.states.device
    x = traj.states[:n_tr].flatten(0, 1)                                         # [(n-1) B, ...]
    x_next = traj.states[1:].flatten(0, 1)                                       # [(n-1) B, ...]
    t = torch.cat([_full(t_j, b, dev) for t_j in traj.timesteps[:n_tr]])        # [(n-1) B]
    s = torch.cat([_full(t_j, b, dev) for t_j in traj.timesteps[1:]])           # [(n-1) B]
    cond_rep = repeat_batch(cond, n_tr)                                          # [(n-1) B, ...]
    x0, _ = policy.x0_eps(x, t, cond_rep)
    mean = bc(policy.schedule.alpha_t(s), x0) * x0.float()
    logp = gaussian_log_prob(x_next, mean, policy.schedule.sigma_t(s))            # [(n-1) B]
    return logp.reshape(n_tr, b).T                                               # [B, n-1]


@contextlib.contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[None]:
    """Run ``module`` without its peft LoRA adapters (the base weights only), restoring them after.

    peft's ``enable_adapters(False)`` also clears requires_grad of the adapter weights; ``enable_adapters(True)``
    sets it again for the active adapter, so the trainable set is unchanged afterwards.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    if not layers:
        raise ValueError("adapters_disabled: the module has no peft adapters (is LoRA injected?)")
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


class AdaptersOff(nn.Module):
    """The reference network of PSO: ``net`` called with its LoRA adapters disabled, without gradients.

    ``net`` is held outside the module tree (no parameters of its own), so optimizers and checkpoints of the
    trained network never see it twice.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self._net = (net,)

    def forward(self, *args: object, **kwargs: object) -> Tensor:
        net = self._net[0]
        with torch.no_grad(), adapters_disabled(net):
            return net(*args, **kwargs)


def reference_of(policy: VPNet) -> VPNet:
    """The PSO reference of a LoRA policy: same network, adapters disabled, same schedule and prediction."""
    return VPNet(AdaptersOff(policy.net), policy.schedule, policy.prediction_type)
