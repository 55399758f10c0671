"""S5: a simplified structured state-space sequence layer (Smith, Warrington, Linderman, ICLR 2023), the recurrent
core the paper's agents use (paper code ``goal_seq/s5.py``, after Lu et al. 2023's resettable S5 for RL).

Per layer, a diagonal complex linear system of P modes driven by the H-wide input u, with conjugate symmetry
(P/2 modes stored, the output doubled)::

    continuous:  x'(t) = Λ x(t) + B̃ u(t),           y = 2·Re(C̃ x) + D ⊙ u
    ZOH:         Λ̄ = exp(Λ Δ),  B̄ = Λ⁻¹ (Λ̄ − I) B̃   (S5 eq. 6; Δ = exp(log_step) learnable per mode)
    recurrence:  x_t = Λ̄ ⊙ (1 − reset_t) · x_{t−1} + B̄ u_t

``reset_t`` (an episode starts at step t) zeroes the state before the step, like the GRU agent; as an element
of the associative scan it sets a_t = 0, which cuts every earlier contribution (the same result as the
paper code's ``binary_operator_reset``). Training runs the recurrence as a parallel prefix scan over the
rollout (:func:`linear_scan`, log₂ T levels); acting runs it one step at a time (:meth:`S5Layer.step`); the two
agree to float rounding (``tests/culture/test_s5.py``).

Initialisation (S5 §4.3 and its code): Λ from the eigendecomposition of the normal part of HiPPO-LegS
(HiPPO-N, :func:`hippo_n`), B̃ = V⁻¹B and C̃ = CV for B ~ N(0, 1/P), C ~ N(0, 1/P) truncated at 2σ (real and
imaginary parts; S5's ``trunc_standard_normal`` option), D ~ N(0, 1), log Δ ~ U(log 0.001, log 0.1). One block of
HiPPO modes (the RL code's ``blocks = 1``); Λ, B, Δ share the agent's learning rate (S5 uses a smaller one).

Every parameter carries a leading member axis M (the population layout of ``agent.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

DT_MIN, DT_MAX = 1e-3, 1e-1     # S5 code defaults for the step-size range


def hippo_legs(n: int) -> Tensor:
    """The HiPPO-LegS matrix A [n, n] (Gu et al. 2020, eq. 29, float64)::

        A_nk = −√(2n+1)·√(2k+1)  (n > k),   −(n+1)  (n = k),   0  (n < k)
    """
    p = torch.sqrt(1 + 2 * torch.arange(n, dtype=torch.float64))
    a = torch.tril(p[:, None] * p[None, :]) - torch.diag(torch.arange(n, dtype=torch.float64))
    return -a


def hippo_n(n: int) -> tuple[Tensor, Tensor]:
    """HiPPO-N: the normal part S = A + P Pᵀ of HiPPO-LegS (P_i = √(i + ½)), S = −½ I + skew, diagonalised
    S = V diag(Λ) Vᴴ (S5 code ``make_DPLR_HiPPO``). Returns (Λ [n] complex128, V [n, n] complex128) with
    eigenvalues in ``eigh``'s order of their imaginary parts; Re Λ = −½ exactly (the diagonal's mean)."""
    p = torch.sqrt(torch.arange(n, dtype=torch.float64) + 0.5)
    s = hippo_legs(n) + p[:, None] * p[None, :]
    # S = −½I + K with K skew-symmetric, so −iK is Hermitian with eigenvalues Im Λ; eigh reads the lower triangle
    # and the real part of the diagonal, i.e. exactly −iK of −iS (the S5 code's call)
    imag, v = torch.linalg.eigh(s.to(torch.complex128) * -1j)
    real = torch.diagonal(s).mean().expand(n)
    return torch.complex(real, imag), v


def discretize_zoh(lam: Tensor, b_tilde: Tensor, step: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-order hold (S5 eq. 6): Λ̄ = exp(ΛΔ), B̄ = (Λ̄ − 1)/Λ · B̃, elementwise over the mode axis.

    Args:
        lam: Λ [..., P] complex.  b_tilde: B̃ [..., H, P] complex (input h → mode p).  step: Δ [..., P] real.
    Returns: (Λ̄ [..., P], B̄ [..., H, P]).
    """
    lam_bar = torch.exp(lam * step)
    return lam_bar, ((lam_bar - 1) / lam)[..., None, :] * b_tilde


def linear_scan(a: Tensor, b: Tensor, x0: Tensor) -> Tensor:
    """All states of x_t = a_t ⊙ x_{t−1} + b_t (x_{−1} = x0), time on axis 0, as a Hillis–Steele parallel prefix
    over the associative operator (a_i, b_i) ∘ (a_j, b_j) = (a_j a_i, a_j b_i + b_j): ⌈log₂ T⌉ levels of whole-tensor
    ops instead of T dependent steps. a, b [T, ...]; x0 [...]. Returns x [T, ...]."""
    b = torch.cat([(a[0] * x0 + b[0])[None], b[1:]])      # fold the initial state into the first element
    d, steps = 1, a.shape[0]
    while d < steps:
        b = torch.cat([b[:d], a[d:] * b[:-d] + b[d:]])     # uses the previous level's a: order matters
        a = torch.cat([a[:d], a[d:] * a[:-d]])
        d *= 2
    return b


def _trunc_normal(shape: tuple[int, ...], std: float, gen: torch.Generator) -> Tensor:
    """N(0, std²) truncated at ±2 std (flax ``lecun_normal``'s truncated normal), float64."""
    out = torch.empty(shape, dtype=torch.float64)
    return nn.init.trunc_normal_(out, 0.0, std, -2 * std, 2 * std, generator=gen)


class S5Layer(nn.Module):
    """One S5 SSM per member: input/output width H, P state modes (P/2 stored: conjugate symmetry).

    The state is complex [M, N, P/2]; :meth:`pack` / :meth:`unpack` turn it into the real [M, N, P] an agent
    carries (real and imaginary parts interleaved).
    """

    def __init__(self, members: int, width: int, state: int, gen: torch.Generator) -> None:
        super().__init__()
        if state % 2:
            raise ValueError(f"the S5 state size must be even (conjugate pairs), got {state}")
        half = state // 2
        lam, v = hippo_n(state)
        lam, v = lam[:half], v[:, :half]                                       # one of each conjugate pair
        b = torch.randn(members, state, width, generator=gen, dtype=torch.float64) / math.sqrt(state)
        b_tilde = v.conj().T @ b.to(torch.complex128)                          # [M, P/2, H] = V⁻¹ B
        c = torch.complex(_trunc_normal((members, width, state), 1 / math.sqrt(state), gen),
                          _trunc_normal((members, width, state), 1 / math.sqrt(state), gen))
        c_tilde = c @ v                                                        # [M, H, P/2] = C V
        log_step = torch.rand(members, 1, half, generator=gen, dtype=torch.float64) \
            * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN)
        self.lam_re = nn.Parameter(lam.real.float().expand(members, 1, half).clone())
        self.lam_im = nn.Parameter(lam.imag.float().expand(members, 1, half).clone())
        self.b_re = nn.Parameter(b_tilde.real.transpose(1, 2).float().contiguous())    # [M, H, P/2]
        self.b_im = nn.Parameter(b_tilde.imag.transpose(1, 2).float().contiguous())
        self.c_re = nn.Parameter(c_tilde.real.transpose(1, 2).float().contiguous())    # [M, P/2, H]
        self.c_im = nn.Parameter(c_tilde.imag.transpose(1, 2).float().contiguous())
        self.d = nn.Parameter(torch.randn(members, 1, width, generator=gen))
        self.log_step = nn.Parameter(log_step.float())

    def discrete(self) -> tuple[Tensor, Tensor, Tensor]:
        """(Λ̄ [M, 1, P/2], B̄ real part [M, H, P/2], B̄ imaginary part) of the current parameters."""
        lam = torch.complex(self.lam_re, self.lam_im)[:, 0]                         # [M, P/2]
        lam_bar, b_bar = discretize_zoh(lam, torch.complex(self.b_re, self.b_im), self.log_step.exp()[:, 0])
        return lam_bar[:, None], b_bar.real, b_bar.imag

    def _drive(self, u: Tensor, b_re: Tensor, b_im: Tensor) -> Tensor:
        """B̄u for real u [M, R, H] as two real matmuls → complex [M, R, P/2]."""
        return torch.complex(torch.bmm(u, b_re), torch.bmm(u, b_im))

    def _readout(self, x: Tensor, u: Tensor) -> Tensor:
        """y = 2·Re(C̃x) + D ⊙ u: x [M, R, P/2] complex, u [M, R, H] → [M, R, H]."""
        return 2 * (torch.bmm(x.real, self.c_re) - torch.bmm(x.imag, self.c_im)) + self.d * u

    def step(self, u: Tensor, x: Tensor, reset: Tensor) -> tuple[Tensor, Tensor]:
        """One step (acting): u [M, N, H], x [M, N, P/2] complex, reset [M, N] → (y [M, N, H], x')."""
        lam_bar, b_re, b_im = self.discrete()
        x = lam_bar * torch.where(reset[..., None], 0.0, x) + self._drive(u, b_re, b_im)
        return self._readout(x, u), x

    def scan(self, u: Tensor, x0: Tensor, resets: Tensor) -> tuple[Tensor, Tensor]:
        """A whole sequence (training): u [T, M, N, H], x0 [M, N, P/2], resets [T, M, N] → (y [T, M, N, H], x_T)."""
        t, m, n, h = u.shape
        lam_bar, b_re, b_im = self.discrete()
        flat = u.transpose(0, 1).reshape(m, t * n, h)                              # [M, T·N, H]
        bu = self._drive(flat, b_re, b_im).view(m, t, n, -1).transpose(0, 1)       # [T, M, N, P/2]
        a = torch.where(resets[..., None], 0.0, lam_bar).to(bu.dtype)               # [T, M, N, P/2]
        xs = linear_scan(a, bu, x0)
        y = self._readout(xs.transpose(0, 1).reshape(m, t * n, -1), flat)          # [M, T·N, H]
        return y.view(m, t, n, h).transpose(0, 1), xs[-1]

    @staticmethod
    def pack(x: Tensor) -> Tensor:
        """complex [..., P/2] → real [..., P]."""
        return torch.view_as_real(x).flatten(-2)

    @staticmethod
    def unpack(h: Tensor) -> Tensor:
        """real [..., P] → complex [..., P/2]."""
        return torch.view_as_complex(h.unflatten(-1, (-1, 2)).contiguous())
