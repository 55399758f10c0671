"""A Gaussian-mixture toy problem with an exact teacher, for fast tests of losses and samplers.

The data are K isotropic Gaussians (std ``s``) in 2-D, split into ``G`` groups; the condition is a one-hot
group vector (all zeros = unconditional). Under VP noising the posterior mean is exact:
x_t | k ~ N(α μ_k, (α² s² + σ²) I), E[x0 | x_t, k] = μ_k + α s² (x_t - α μ_k) / (α² s² + σ²), mixed by the
component responsibilities. So the teacher's ODE, its DDIM steps and its CFG are all exact.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from nodes.mlcm.vp import VPNet, VPSchedule, linear_beta_alphas_cumprod


class GMMTeacher(nn.Module):
    """ε-prediction of the exact posterior mean of a 2-D Gaussian mixture (no parameters to train).

    Args:
        means: [K, 2] component means; std: component std s; groups: [K] group id of each component.
    """

    def __init__(self, means: Tensor, std: float, groups: Tensor, schedule: VPSchedule) -> None:
        super().__init__()
        self.register_buffer("means", means.float())
        self.register_buffer("groups", groups.long())
        self.std = std
        self.schedule = schedule

    @property
    def num_groups(self) -> int:
        return int(self.groups.max()) + 1

    def posterior_mean(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        a, s = self.schedule.alpha(t)[:, None], self.schedule.sigma(t)[:, None]   # [B, 1]
        var = a**2 * self.std**2 + s**2                                           # [B, 1]
        diff = x[:, None, :] - a[:, :, None] * self.means[None]                   # [B, K, 2]
        logp = -(diff**2).sum(-1) / (2 * var)                                     # [B, K]
        allowed = cond[:, self.groups] > 0                                        # [B, K]
        allowed = allowed | ~allowed.any(1, keepdim=True)                         # uncond: all components
        resp = torch.softmax(logp.masked_fill(~allowed, -math.inf), dim=1)        # [B, K]
        post = self.means[None] + (a * self.std**2 / var)[:, :, None] * diff      # [B, K, 2]
        return (resp[:, :, None] * post).sum(1)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, timestep_cond: Tensor | None = None) -> Tensor:
        x0 = self.posterior_mean(x.float(), t, cond.float())
        a, s = self.schedule.alpha(t)[:, None], self.schedule.sigma(t)[:, None]
        return (x - a * x0) / s

    def sample_data(self, n: int, cond: Tensor, gen: torch.Generator) -> Tensor:
        """Exact samples of the (conditional) data distribution [n, 2]."""
        allowed = (cond[:, self.groups] > 0).float()
        allowed = torch.where(allowed.sum(1, keepdim=True) > 0, allowed, torch.ones_like(allowed))
        k = torch.multinomial(allowed, 1, generator=gen).squeeze(1)
        return self.means[k] + self.std * torch.randn(n, 2, generator=gen)


class ToyStudent(nn.Module):
    """A small MLP v-predictor for the toy: input (x, Fourier(t), cond, optional γ-embedding)."""

    def __init__(self, num_groups: int, width: int = 128, cond_dim: int = 0) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.inp = nn.Linear(2 + 16 + num_groups + cond_dim, width)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                  nn.Linear(width, 2))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, timestep_cond: Tensor | None = None) -> Tensor:
        freqs = torch.arange(8, device=x.device, dtype=torch.float32)
        tt = (t.float() / 1000.0)[:, None] * (2.0**freqs)[None] * math.pi         # [B, 8]
        parts = [x.float(), tt.sin(), tt.cos(), cond.float()]
        if self.cond_dim:
            parts.append(timestep_cond if timestep_cond is not None else x.new_zeros(x.shape[0], self.cond_dim))
        return self.body(self.inp(torch.cat(parts, 1)))


def make_teacher(num_modes: int = 8, radius: float = 2.0, std: float = 0.08, num_groups: int = 2) -> VPNet:
    """Modes on a circle, alternating groups; SD's scaled-linear 1000-step VP schedule (α_999 = 0.068)."""
    angle = torch.arange(num_modes) * 2 * math.pi / num_modes
    means = radius * torch.stack([angle.cos(), angle.sin()], 1)
    schedule = VPSchedule(linear_beta_alphas_cumprod(1000, 0.00085, 0.012, scaled=True))
    net = GMMTeacher(means, std, torch.arange(num_modes) % num_groups, schedule)
    return VPNet(net, schedule, "eps")


def pretrain_student(teacher: VPNet, student: nn.Module, steps: int = 300, batch: int = 256, seed: int = 0,
                     lr: float = 3e-3) -> VPNet:
    """Regress the student's v onto the teacher's (v = α ε - σ x̂0) at random (t, noisy data, cond).

    This is the toy's "start from the teacher's weights"; v-prediction keeps x̂0 = α x - σ v well
    conditioned at t = T-1, where ε-prediction would multiply the net's error by 1/α_T ≈ 15.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    g = teacher.net.num_groups
    for _ in range(steps):
        cond = nn.functional.one_hot(torch.randint(0, g + 1, (batch,), generator=gen), g + 1)[:, :g].float()
        x0 = teacher.net.sample_data(batch, cond, gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        a, s = teacher.schedule.alpha(t)[:, None], teacher.schedule.sigma(t)[:, None]
        xt = a * x0 + s * torch.randn(batch, 2, generator=gen)
        with torch.no_grad():
            x0_t, eps_t = teacher.x0_eps(xt, t, cond)
        loss = (student(xt, t, cond) - (a * eps_t - s * x0_t)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return VPNet(student, teacher.schedule, "v")


def wasserstein2(a: Tensor, b: Tensor) -> float:
    """Exact W2 between two equal-size point clouds (optimal assignment; scipy)."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(a.detach().double(), b.detach().double()) ** 2
    rows, cols = linear_sum_assignment(cost.numpy())
    return float(cost[rows, cols].mean().sqrt())
