"""Discrete variance-preserving (VP) diffusion math: the one DDPM-schedule type of the project.

:class:`DiscreteVPSchedule` is the N-step DDPM schedule seen two ways at once:
    * by samplers (``nodes.core.denoiser``), in the σ-space of Karras et al. 2022 (EDM, Table 1, "VP"):
      ``alpha(sigma) = 1``, ``c_in``, ``timestep(sigma)``, ``sigma_at(t)``, ``sigmas``;
    * by the trainers (every distillation pack), on integer timesteps: ``alpha_t(t) = sqrt(ᾱ_t)``,
      ``sigma_t(t) = sqrt(1 - ᾱ_t)``, ``alphas_cumprod``.
Both read the same table: ``sigmas[t] = sqrt((1 - ᾱ_t) / ᾱ_t)`` ⇔ ``ᾱ_t = 1 / (1 + sigmas[t]²)``.

Notation (see ``shared/methods.md`` "Common notation"): ``x_t = α_t x0 + σ_t ε`` with ``α_t = sqrt(ᾱ_t)``,
``σ_t = sqrt(1 - ᾱ_t)`` on ``T = 1000`` integer timesteps. The k-diffusion noise level of the same state
is ``sigma_k(t) = σ_t / α_t`` and its state is ``x_t / α_t`` — that is how these VP helpers meet the
``D(x, sigma, cond) -> x0`` denoiser contract used by the samplers.

A *network* here is any ``nn.Module`` called ``net(x, t, cond, timestep_cond=None)`` returning its raw
prediction (ε, v or x0); :class:`VPNet` turns that into ``(x0, ε)``. Diffusers UNets are adapted to
that convention by ``nodes.core.train.adapter.UNetAdapter``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

PREDICTION_TYPES = ("eps", "v", "x0")


def linear_beta_alphas_cumprod(steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                               scaled: bool = False) -> Tensor:
    """ᾱ_t of the DDPM linear-β schedule (``scaled=True``: SD's "scaled_linear", linear in sqrt β).

    Computed in float64 then rounded (the training-side tables); :func:`make_betas` is the float32 form
    the reference samplers use, so that their sigma tables agree bit for bit.
    """
    if scaled:
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0).float()


def make_betas(num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
               beta_schedule: str = "scaled_linear") -> Tensor:
    """DDPM betas [N] in float32.

    ``linear``: Ho et al. 2020 Sec. 4; ``scaled_linear``: linear in sqrt(beta) (the LDM / SD schedule,
    Rombach et al. 2022 configs); computed in float32 like the reference implementations so sigma tables
    agree bit for bit.
    """
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    raise ValueError(f"unknown beta_schedule {beta_schedule!r} (expected 'linear' or 'scaled_linear')")


def bc(v: Tensor, x: Tensor) -> Tensor:
    """Broadcast a per-sample vector [B] against a state [B, ...]."""
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


@dataclass(frozen=True, eq=False)
class DiscreteVPSchedule:
    """The N-step DDPM schedule (Ho et al. 2020; Karras et al. 2022, Table 1, "VP" column, discretised).

    Args:
        sigmas: [N] float32, ``sigmas[t] = sqrt((1 - ᾱ_t) / ᾱ_t)``, increasing in t.
        alphas_cumprod: [N] float32 ᾱ_t; None = derived from ``sigmas`` as ᾱ = 1 / (1 + σ²) (in float64).
            Given explicitly by :meth:`from_alphas_cumprod`, so a table built from ᾱ keeps it exactly.
    """

    sigmas: Tensor
    alphas_cumprod: Tensor | None = None        # filled in by __post_init__ when None

    def __post_init__(self) -> None:
        if self.alphas_cumprod is None:
            abar = (1.0 / (1.0 + self.sigmas.double() ** 2)).float().cpu()
            object.__setattr__(self, "alphas_cumprod", abar)

    @classmethod
    def from_config(cls, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                    beta_end: float = 0.012, beta_schedule: str = "scaled_linear") -> DiscreteVPSchedule:
        """Build from DDPM betas (diffusers' scheduler config names)."""
        betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule)
        abar = torch.cumprod(1.0 - betas, dim=0)
        return cls(((1 - abar) / abar) ** 0.5)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor) -> DiscreteVPSchedule:
        """Build from ᾱ_t [N] (kept as given; σ_t = sqrt((1 - ᾱ) / ᾱ))."""
        abar = alphas_cumprod.float()
        return cls(((1 - abar) / abar) ** 0.5, abar)

    @property
    def num_timesteps(self) -> int:
        return int(self.sigmas.shape[0])

    # -- sampling side: the EDM σ-space (x = x0 + σ ε), what ``nodes.core.denoiser`` and samplers call --

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def alpha(self, sigma: Tensor) -> Tensor:
        """Signal scale of x at sigma: 1 in the EDM (VE-form) space."""
        return torch.ones_like(torch.as_tensor(sigma, dtype=torch.float32))

    def c_in(self, sigma: Tensor) -> Tensor:
        """Network input scale 1 / sqrt(sigma^2 + 1) (EDM Table 1, VP c_in)."""
        return 1.0 / (sigma**2 + 1.0) ** 0.5

    def timestep(self, sigma: Tensor) -> Tensor:
        """Continuous timestep t for sigma: linear interpolation of t against log sigma (k-diffusion
        ``DiscreteSchedule.sigma_to_t``); exact on table entries."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigmas = self.sigmas.to(sigma.device).double().log()
        log_s = sigma.double().clamp_min(1e-10).log()
        idx = torch.searchsorted(log_sigmas, log_s.reshape(-1)).clamp(1, self.num_timesteps - 1)
        lo, hi = log_sigmas[idx - 1], log_sigmas[idx]
        w = ((log_s.reshape(-1) - lo) / (hi - lo)).clamp(0, 1)
        return ((idx - 1).double() + w).float().reshape(sigma.shape)

    def sigma_at(self, t: Tensor | float) -> Tensor:
        """sigma at a (fractional) timestep: log-linear interpolation of the table, in float64 so that
        integer timesteps give the table entry exactly (``timestep(sigma_at(t)) == t``)."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_timesteps - 1)
        lo = t.floor().long()
        hi = (lo + 1).clamp_max(self.num_timesteps - 1)
        w = t - lo.double()
        log_sigmas = self.sigmas.double().log()
        interp = ((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp()
        return torch.where(w == 0, self.sigmas[lo].double(), interp).float()

    # -- training side: the DDPM state x_t = α_t x0 + σ_t ε on integer timesteps t [B] --

    def alpha_t(self, t: Tensor) -> Tensor:
        """α_t = sqrt(ᾱ_t) for integer timesteps ``t`` [B]."""
        return self.alphas_cumprod.to(t.device)[t.long()].sqrt()

    def sigma_t(self, t: Tensor) -> Tensor:
        """σ_t = sqrt(1 - ᾱ_t)."""
        return (1.0 - self.alphas_cumprod.to(t.device)[t.long()]).sqrt()

    def sigma_k(self, t: Tensor) -> Tensor:
        """k-diffusion noise level σ_t / α_t of timestep ``t`` (the ``sigmas`` entry, from ᾱ)."""
        return self.sigma_t(t) / self.alpha_t(t)

    def t_from_sigma_k(self, sigma_k: Tensor) -> Tensor:
        """The nearest integer timestep whose ``sigma_k`` matches (for denoisers called in σ space)."""
        table = ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt().to(sigma_k.device)
        return (table[None, :].log() - sigma_k.float().clamp_min(1e-8)[:, None].log()).abs().argmin(1)


def to_x0_eps(out: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str) -> tuple[Tensor, Tensor]:
    """(x̂0, ε̂) from a raw prediction at noise (α, σ) [B] (ε: x̂0=(x-σε)/α; v: x̂0=αx-σv, ε=σx+αv)."""
    a, s = bc(alpha, x), bc(sigma, x)
    if prediction_type == "eps":
        return (x - s * out) / a, out
    if prediction_type == "v":
        return a * x - s * out, s * x + a * out
    if prediction_type == "x0":
        return out, (x - a * out) / s
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


@dataclass
class VPNet:
    """A network plus its prediction type and schedule: the training-side view of a MODEL."""

    net: nn.Module
    schedule: DiscreteVPSchedule
    prediction_type: str = "eps"

    def x0_eps(self, x: Tensor, t: Tensor, cond: Cond, timestep_cond: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        """(x̂0, ε̂) of state ``x`` [B, ...] at integer timesteps ``t`` [B]."""
        out = self.net(x, t, cond, timestep_cond).to(x.dtype)
        return to_x0_eps(out, x, self.schedule.alpha_t(t), self.schedule.sigma_t(t), self.prediction_type)


@dataclass(frozen=True)
class Conditioning:
    """Conditioning that is more than one tensor (SDXL: token states + pooled text embeds and time ids).

    A plain token-state tensor [B, T, D] is the conditioning of the SD1.5-style UNets and the built-in teacher;
    a network that needs more (diffusers' ``added_cond_kwargs``) takes this instead. It indexes, moves,
    repeats and concatenates along the batch like a tensor (every field row-aligned), so prompt pools, CFG
    batching and the losses treat both alike through :func:`expand_batch`, :func:`repeat_batch` and
    :func:`cat_batch`.

    Args:
        hidden_states: [B, T, D] token states (``encoder_hidden_states``).
        added_cond_kwargs: extra per-sample tensors, each [B, ...] (SDXL: ``text_embeds`` [B, D_pool],
            ``time_ids`` [B, 6]); None = none.
    """

    hidden_states: Tensor
    added_cond_kwargs: dict[str, Tensor] | None = None

    @property
    def shape(self) -> torch.Size:
        return self.hidden_states.shape

    @property
    def device(self) -> torch.device:
        return self.hidden_states.device

    def map(self, fn: Callable[[Tensor], Tensor]) -> Conditioning:
        """The same conditioning with ``fn`` applied to every tensor (each keeps its batch row alignment)."""
        extra = self.added_cond_kwargs
        return Conditioning(fn(self.hidden_states), None if extra is None else {k: fn(v) for k, v in extra.items()})

    def __getitem__(self, idx: Tensor | slice | int) -> Conditioning:
        return self.map(lambda v: v[idx])

    def to(self, *args: object, **kwargs: object) -> Conditioning:
        return self.map(lambda v: v.to(*args, **kwargs))

    def expand_to(self, batch: int) -> Conditioning:
        """A [1, ...] conditioning repeated to ``batch`` rows (the empty prompt under CFG)."""
        if self.shape[0] == batch:
            return self
        return self[torch.zeros(batch, dtype=torch.long, device=self.device)]

    def repeat_batch(self, n: int) -> Conditioning:
        """[B, ...] -> [nB, ...]: the whole batch ``n`` times in a row (row k·B + i is row i)."""
        return self.map(lambda v: v.repeat(n, *([1] * (v.ndim - 1))))

    @staticmethod
    def cat(parts: Sequence[Conditioning]) -> Conditioning:
        """Row-wise concatenation; every part carries the same ``added_cond_kwargs`` keys."""
        keys = [None if p.added_cond_kwargs is None else sorted(p.added_cond_kwargs) for p in parts]
        if any(k != keys[0] for k in keys):
            raise ValueError(f"cannot concatenate conditionings with different added_cond_kwargs: {keys}")
        extra = None if keys[0] is None else {k: torch.cat([p.added_cond_kwargs[k] for p in parts]) for k in keys[0]}
        return Conditioning(cat_tokens([p.hidden_states for p in parts]), extra)


Cond = Tensor | Conditioning


def cat_tokens(states: Sequence[Tensor]) -> Tensor:
    """Row-wise concatenation of token states [B_i, T_i, D] whose lengths may differ (a prompt longer than one
    77-token window encodes to 154, 231, ... tokens).

    Each part is repeated along the tokens to the least common multiple of the lengths — ComfyUI's rule for
    batching cross-attention conditionings (comfy/conds.py, ``CONDCrossAttn.concat``). It changes nothing a
    UNet computes: attention over keys/values [K; K] equals attention over K (every softmax weight halves,
    every value appears twice). Equal lengths: a plain ``torch.cat``.
    """
    lengths = {s.shape[1] for s in states}
    if len(lengths) > 1:
        target = math.lcm(*lengths)
        states = [s.repeat(1, target // s.shape[1], 1) for s in states]
    return torch.cat(list(states))


def expand_batch(cond: Cond, n: int) -> Cond:
    """A [1, ...] conditioning as ``n`` rows [n, ...] (a tensor: a broadcast view, as ``expand``)."""
    if isinstance(cond, Conditioning):
        return cond.expand_to(n)
    return cond.expand(n, *cond.shape[1:])


def repeat_batch(cond: Cond, n: int) -> Cond:
    """[B, ...] -> [nB, ...]: the batch ``n`` times in a row, i.e. ``torch.cat([cond] * n)``."""
    if isinstance(cond, Conditioning):
        return cond.repeat_batch(n)
    return cond.repeat(n, *([1] * (cond.ndim - 1)))


def cat_batch(parts: Sequence[Cond]) -> Cond:
    """Row-wise concatenation of conditionings of one kind (all tensors or all :class:`Conditioning`)."""
    if all(isinstance(p, Conditioning) for p in parts):
        return Conditioning.cat(parts)
    if all(isinstance(p, Tensor) for p in parts):
        return cat_tokens(parts) if all(p.ndim == 3 for p in parts) else torch.cat(list(parts))
    raise TypeError(f"cannot concatenate mixed conditionings: {[type(p).__name__ for p in parts]}")


def cat_cond(cond: Cond, uncond: Cond) -> Cond:
    """Stack conditional and unconditional inputs along the batch for one CFG forward pass ([2B, ...]:
    cond rows, then uncond rows; a [1, ...] uncond is broadcast to B rows first)."""
    if isinstance(cond, Tensor):
        rows = uncond.expand(cond.shape[0], *uncond.shape[1:]) if uncond.shape[0] == 1 else uncond
        return cat_batch([cond, rows])
    return cat_batch([cond, expand_batch(uncond, cond.shape[0])])


def guided_x0_eps(teacher: VPNet, x: Tensor, t: Tensor, cond: Cond, uncond: Cond | None,
                  scale: float) -> tuple[Tensor, Tensor]:
    """Classifier-free guidance ε_w = ε_u + s(ε_c - ε_u) (and the same on x̂0); s = LCM's w + 1."""
    if uncond is None or scale == 1.0:
        return teacher.x0_eps(x, t, cond)
    x0, eps = teacher.x0_eps(torch.cat([x, x]), torch.cat([t, t]), cat_cond(cond, uncond))
    (x0_c, x0_u), (eps_c, eps_u) = x0.chunk(2), eps.chunk(2)
    return x0_u + scale * (x0_c - x0_u), eps_u + scale * (eps_c - eps_u)


def ddim_to(schedule: DiscreteVPSchedule, x0: Tensor, eps: Tensor, s: Tensor) -> Tensor:
    """Deterministic DDIM (η = 0) jump to timestep ``s``: x_s = α_s x̂0 + σ_s ε̂."""
    return bc(schedule.alpha_t(s), x0) * x0 + bc(schedule.sigma_t(s), x0) * eps


@torch.no_grad()
def teacher_ddim(teacher: VPNet, x: Tensor, t: Tensor, s: Tensor, cond: Cond, uncond: Cond | None,
                 scale: float, substeps: int = 1) -> Tensor:
    """Guided teacher DDIM from ``t`` to ``s`` [B] over ``substeps`` equal sub-steps (MLCM's skipping-step solver).

    Sub-step j ends at round(t + (s - t) j / k); when t == s every sub-step is the identity.
    """
    for j in range(1, substeps + 1):
        nxt = torch.round(t + (s - t).float() * j / substeps).long()
        x0, eps = guided_x0_eps(teacher, x, t, cond, uncond, scale)
        x, t = ddim_to(teacher.schedule, x0, eps, nxt), nxt
    return x


def lcm_boundary_scalings(t: Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0
                          ) -> tuple[Tensor, Tensor]:
    """LCM's discrete consistency boundary scalings (LCM paper eq. 9 with diffusers' constants).

    c_skip = σd² / ((10t)² + σd²), c_out = 10t / sqrt((10t)² + σd²): c_skip(0) = 1, c_out(0) = 0, so
    f(x, 0) = x; for t ≥ 19, c_skip < 1e-5 and f is the network's x̂0 to within 1e-5.
    """
    st = t.float() * timestep_scaling
    return sigma_data**2 / (st**2 + sigma_data**2), st / (st**2 + sigma_data**2).sqrt()


def consistency_x0(student: VPNet, x: Tensor, t: Tensor, cond: Cond, timestep_cond: Tensor | None = None,
                   boundary: bool = True) -> Tensor:
    """The consistency function f_θ(x, t) = c_skip(t) x + c_out(t) x̂0_θ(x, t) (MLCM eq. 4 / LCM)."""
    x0, _ = student.x0_eps(x, t, cond, timestep_cond)
    if not boundary:
        return x0
    c_skip, c_out = lcm_boundary_scalings(t)
    return bc(c_skip, x) * x + bc(c_out, x) * x0


def pseudo_huber(a: Tensor, b: Tensor, c: float) -> Tensor:
    """Per-sample pseudo-Huber distance, elementwise sqrt((a-b)² + c²) - c averaged over non-batch dims.

    The elementwise form is LCM's (``huber_c`` = 0.001); ``c = 0`` gives the mean absolute error and a
    large ``c`` approaches (a-b)²/(2c).
    """
    d = (a.float() - b.float()) ** 2
    return ((d + c * c).sqrt() - c).flatten(1).mean(1)
