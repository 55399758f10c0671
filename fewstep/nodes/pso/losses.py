"""PSO's pairwise losses and the naive diffusion-loss baseline (small callables; hyperparameters in ``__init__``).

Sources: PSO (Miao et al., ICLR 2025, arXiv 2410.03190), restated in ``shared/methods.md`` §5:
    * online (human preference, D3PO-style): L = -log σ(β [p_A log ρ_A + p_B log ρ_B]),
      ρ = clamp(π_θ / π_ref, 1-ε, 1+ε) per transition, (p_A, p_B) ∈ {(+1,-1), (-1,+1), (0,0)};
    * offline (concept customization): m(x) = mean(w (x̂0 - x0)²) at a shared noise ε and timestep t,
      'hinge' L = relu(1 - β (m_θ(x⁻) - m_θ(x⁺))) (the scripts' reference-free ``pso_db``), or
      'dpo'   L = -log σ(β [(m_ref(x⁺) - m_ref(x⁻)) - (m_θ(x⁺) - m_θ(x⁻))]) (Diffusion-DPO form),
      plus λ_prior m_θ(x⁻) (keep fitting the model's own samples).
The naive baseline is the plain denoising loss E_t ‖ε̂_θ(x_t, t) - ε‖² that PSO is compared against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fewstep.nodes.core.train.vp import Cond, VPNet, bc

OBJECTIVES = ("hinge", "dpo")


def preference(r_a: Tensor, r_b: Tensor, tie: float = 0.0) -> Tensor:
    """Pareto comparison of two samples' rewards: [B, 2] of (+1,-1) (A wins), (-1,+1) (B wins) or (0,0).

    ``r_a``, ``r_b``: [B] (one reward) or [B, K] (several: A wins only when it is at least as good on every
    reward and better on one, by more than ``tie``). Ties and incomparable pairs give (0,0): no gradient.
    """
    if r_a.shape != r_b.shape:
        raise ValueError(f"preference: reward shapes differ, {tuple(r_a.shape)} vs {tuple(r_b.shape)}")
    d = (r_a - r_b).float()
    d = d[:, None] if d.ndim == 1 else d                                           # [B, K]
    a_wins = (d >= -tie).all(1) & (d > tie).any(1)
    b_wins = (d <= tie).all(1) & (d < -tie).any(1)
    p_a = a_wins.float() - b_wins.float()                                          # [B] in {+1, -1, 0}
    return torch.stack([p_a, -p_a], 1)


class OnlinePSOLoss:
    """Online PSO: clipped log-ratio pairwise loss over the stochastic transitions of two trajectories.

    Args:
        beta: β (paper: 50).  clip: ε of the ratio clamp to [1-ε, 1+ε] (paper: 0.1); the clamp is a trust region
            around the *reference* (LoRA off): once a transition's ratio leaves it, its gradient is zero.
    Call: ``(log_ratio_a, log_ratio_b [B, J] = log π_θ - log π_ref per transition, pref [B, 2]) -> loss [B]``
    (the mean over the J transitions; ties give log 2 with zero gradient).
    """

    def __init__(self, beta: float = 50.0, clip: float = 0.1) -> None:
        if beta <= 0 or not 0 < clip < 1:
            raise ValueError(f"OnlinePSOLoss: need beta > 0 and 0 < clip < 1, got beta={beta}, clip={clip}")
        self.beta = beta
        self.lo, self.hi = math.log(1 - clip), math.log(1 + clip)

    def __call__(self, log_ratio_a: Tensor, log_ratio_b: Tensor, pref: Tensor) -> Tensor:
        if log_ratio_a.shape != log_ratio_b.shape or log_ratio_a.ndim != 2:
            raise ValueError(f"OnlinePSOLoss: log ratios must both be [B, J], got {tuple(log_ratio_a.shape)} "
                             f"and {tuple(log_ratio_b.shape)}")
        log_rho_a = log_ratio_a.float().clamp(self.lo, self.hi)        # log clamp(ρ) = clamp(log ρ)
        log_rho_b = log_ratio_b.float().clamp(self.lo, self.hi)
        z = self.beta * (pref[:, :1] * log_rho_a + pref[:, 1:] * log_rho_b)          # [B, J]
        return -F.logsigmoid(z).mean(1)


def x0_error(view: VPNet, x0: Tensor, t: Tensor, noise: Tensor, cond: Cond, weighting: str = "snr") -> Tensor:
    """m(x0) = mean over dims of w(t) (x̂0_θ(x_t, t) - x0)², x_t = α_t x0 + σ_t ε. Returns [B].

    ``weighting``: "snr" is the official offline code's w = σ_edm⁻² = α²/σ² (EDM preconditioning), which makes m
    the ε-space error ‖ε̂ - ε‖²; "none" is the raw x0-space error.
    """
    sched = view.schedule
    a, s = sched.alpha_t(t), sched.sigma_t(t)
    x_t = bc(a, x0) * x0 + bc(s, x0) * noise
    pred, _ = view.x0_eps(x_t, t, cond)
    err = (pred.float() - x0.float()) ** 2
    if weighting == "snr":
        err = err * bc((a / s) ** 2, err)
    elif weighting != "none":
        raise ValueError(f"x0_error: weighting must be 'snr' or 'none', got {weighting!r}")
    return err.flatten(1).mean(1)


class OfflinePSOLoss:
    """Offline PSO on (target x⁺, reference x⁻) pairs errors (same ε, same t).

    Args:
        beta: β (scripts: 5).  prior_weight: λ_prior on m_θ(x⁻) (scripts: 0.5).
        objective: "hinge" (reference-free, the scripts' ``pso_db``) or "dpo" (needs the reference errors).
    Call: ``(m_pos, m_neg [B], m_pos_ref=None, m_neg_ref=None) -> loss [B]``.
    """

    def __init__(self, beta: float = 5.0, prior_weight: float = 0.5, objective: str = "hinge") -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"OfflinePSOLoss: objective must be one of {OBJECTIVES}, got {objective!r}")
        if beta <= 0 or prior_weight < 0:
            raise ValueError(f"OfflinePSOLoss: need beta > 0, prior_weight >= 0 (got {beta}, {prior_weight})")
        self.beta, self.prior_weight, self.objective = beta, prior_weight, objective

    @property
    def needs_reference(self) -> bool:
        return self.objective == "dpo"

    def __call__(self, m_pos: Tensor, m_neg: Tensor, m_pos_ref: Tensor | None = None,
                 m_neg_ref: Tensor | None = None) -> Tensor:
        if self.objective == "hinge":
            pair = F.relu(1 - self.beta * (m_neg - m_pos))
        else:
            if m_pos_ref is None or m_neg_ref is None:
                raise ValueError("OfflinePSOLoss(objective='dpo') needs the reference errors m_pos_ref, m_neg_ref")
            pair = -F.logsigmoid(self.beta * ((m_pos_ref - m_neg_ref) - (m_pos - m_neg)))
        return pair + self.prior_weight * m_neg


class DiffusionLoss:
    """The naive baseline: the plain denoising loss ‖ε̂_θ(x_t, t) - ε‖² at t ~ U{t_min, ..., t_max} (DDPM eq. 14).

    Call: ``(view, x0 [B, ...], cond, generator) -> loss [B]``; every draw comes from ``generator``.
    """

    def __init__(self, t_min: int = 0, t_max: int = 999) -> None:
        if not 0 <= t_min <= t_max:
            raise ValueError(f"DiffusionLoss: need 0 <= t_min <= t_max, got {t_min}, {t_max}")
        self.t_min, self.t_max = t_min, t_max

    def __call__(self, view: VPNet, x0: Tensor, cond: Cond, generator: torch.Generator) -> Tensor:
        b, dev = x0.shape[0], x0.device
        t = torch.randint(self.t_min, self.t_max + 1, (b,), generator=generator, device=dev)
        noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=torch.float32)
        sched = view.schedule
        x_t = bc(sched.alpha_t(t), x0) * x0.float() + bc(sched.sigma_t(t), x0) * noise
        _, eps = view.x0_eps(x_t, t, cond)
        return ((eps.float() - noise) ** 2).flatten(1).mean(1)
