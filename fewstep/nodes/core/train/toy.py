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

from fewstep.nodes.core.train.vp import DiscreteVPSchedule, VPNet, linear_beta_alphas_cumprod


class GMMTeacher(nn.Module):
    """ε-prediction of the exact posterior mean of a 2-D Gaussian mixture (no parameters to train).

    Args:
        means: [K, 2] component means; std: component std s; groups: [K] group id of each component.
    """

    def __init__(self, means: Tensor, std: float, groups: Tensor, schedule: DiscreteVPSchedule) -> None:
        super().__init__()
        self.register_buffer("means", means.float())
        self.register_buffer("groups", groups.long())
        self.std = std
        self.schedule = schedule

    @property
    def num_groups(self) -> int:
        return int(self.groups.max()) + 1

    def posterior_mean(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        a, s = self.schedule.alpha_t(t)[:, None], self.schedule.sigma_t(t)[:, None]   # [B, 1]
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
        a, s = self.schedule.alpha_t(t)[:, None], self.schedule.sigma_t(t)[:, None]
        return (x - a * x0) / s

    def sample_data(self, n: int, cond: Tensor, gen: torch.Generator) -> Tensor:
        """Exact samples of the (conditional) data distribution [n, 2]."""
        allowed = (cond[:, self.groups] > 0).float()
        allowed = torch.where(allowed.sum(1, keepdim=True) > 0, allowed, torch.ones_like(allowed))
        k = torch.multinomial(allowed, 1, generator=gen).squeeze(1)
        return self.means[k] + self.std * torch.randn(n, 2, generator=gen)


class ToyStudent(nn.Module):
    """The toy student: the teacher's v-prediction plus a small MLP residual (zero at initialisation).

    Starting exactly at the teacher is the toy's "copy the teacher's weights"; v-prediction keeps
    x̂0 = α x - σ v well conditioned at t = T-1, where ε-prediction would multiply errors by 1/α_T ≈ 15.
    Input of the MLP: (x, Fourier(t), cond, optional γ-embedding of size ``cond_dim``).
    """

    def __init__(self, teacher: GMMTeacher, width: int = 64, cond_dim: int = 0) -> None:
        super().__init__()
        self.teacher = teacher
        self.cond_dim = cond_dim
        self.inp = nn.Linear(2 + 16 + teacher.num_groups + cond_dim, width)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, timestep_cond: Tensor | None = None) -> Tensor:
        a, s = self.teacher.schedule.alpha_t(t)[:, None], self.teacher.schedule.sigma_t(t)[:, None]
        x0 = self.teacher.posterior_mean(x.float(), t, cond.float())
        v_teacher = a * (x - a * x0) / s - s * x0                                  # v = α ε - σ x0
        freqs = torch.arange(8, device=x.device, dtype=torch.float32)
        tt = (t.float() / 1000.0)[:, None] * (2.0**freqs)[None] * math.pi         # [B, 8]
        parts = [x.float(), tt.sin(), tt.cos(), cond.float()]
        if self.cond_dim:
            parts.append(timestep_cond if timestep_cond is not None else x.new_zeros(x.shape[0], self.cond_dim))
        return v_teacher + self.body(self.inp(torch.cat(parts, 1)))


def make_teacher(num_modes: int = 8, radius: float = 2.0, std: float = 0.08, num_groups: int = 2) -> VPNet:
    """Modes on a circle, alternating groups; SD's scaled-linear 1000-step VP schedule (α_999 = 0.068)."""
    angle = torch.arange(num_modes) * 2 * math.pi / num_modes
    means = radius * torch.stack([angle.cos(), angle.sin()], 1)
    schedule = DiscreteVPSchedule.from_alphas_cumprod(linear_beta_alphas_cumprod(1000, 0.00085, 0.012, scaled=True))
    net = GMMTeacher(means, std, torch.arange(num_modes) % num_groups, schedule)
    return VPNet(net, schedule, "eps")


def wasserstein2(a: Tensor, b: Tensor) -> float:
    """Exact W2 between two equal-size point clouds (optimal assignment; scipy)."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(a.detach().double(), b.detach().double()) ** 2
    rows, cols = linear_sum_assignment(cost.numpy())
    return float(cost[rows, cols].mean().sqrt())


def teacher_ddim_samples(teacher: VPNet, cond: Tensor, steps: int, seed: int = 2) -> Tensor:
    """The teacher's own deterministic DDIM sampler, ``steps`` uniform steps from t = 999 to 0 (no CFG)."""
    from fewstep.nodes.core.train.vp import teacher_ddim

    n = cond.shape[0]
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    ts = [int(v) for v in torch.linspace(999, 0, steps + 1).round()]
    for a, b in zip(ts[:-1], ts[1:], strict=True):
        x = teacher_ddim(teacher, x, torch.full((n,), a), torch.full((n,), b), cond, None, 1.0)
    return x


def student_samples(view: VPNet, cond: Tensor, timesteps: list[int], timestep_cond: Tensor | None = None,
                    seed: int = 3) -> Tensor:
    """Consistency multistep samples of a student at the given timesteps."""
    from fewstep.nodes.core.train.consistency import sample_consistency_vp

    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(cond.shape[0], 2, generator=gen)
    with torch.no_grad():
        return sample_consistency_vp(view, noise, timesteps, cond, gen, timestep_cond=timestep_cond)


def toy_pool():
    """A PromptPool of the toy's conditions: group 0, group 1 and the unconditional all-zeros row."""
    from fewstep.nodes.core.train.prompts import PromptPool

    return PromptPool(cond=torch.eye(3)[:, :2], uncond=torch.zeros(1, 2), prompts=["g0", "g1", ""],
                      latent_shape=(2,))


def toy_setup(n: int = 512, gamma_dim: int = 16) -> tuple[VPNet, VPNet, Tensor, Tensor]:
    """(teacher, student (= teacher + zero residual) with a γ input, eval cond [n, 2] of group 0, balanced reference [n, 2]).

    The reference holds exactly n/4 points per mode of group 0, which keeps its W2 noise floor low.
    """
    torch.manual_seed(0)
    teacher = make_teacher()
    student = VPNet(ToyStudent(teacher.net, width=64, cond_dim=gamma_dim), teacher.schedule, "v")
    cond = nn.functional.one_hot(torch.zeros(n, dtype=torch.long), 2).float()
    means = teacher.net.means[teacher.net.groups == 0]                               # [4, 2]
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
    return teacher, student, cond, means.repeat(n // len(means), 1) + teacher.net.std * noise
