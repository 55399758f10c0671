"""The closed-form DD velocity against the density it should transport and against a numerical ODE solve.

Three independent checks on small codebooks:
    * the continuity equation ∂_s ρ_s + ∇·(ρ_s v) = 0 by finite differences, ρ_s the Gaussian-mixture marginal
      of y_s = s c + (1 − s) ε (a velocity ignoring p breaks it by orders of magnitude, so the bound can fail);
    * pushing N(0, I) samples through the ODE lands on codeword k with frequency p_k;
    * the fast Euler solver's tokens equal those of a 400-step RK4 solve of the same velocity.
"""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.dd.flow import flow_space, posterior_mean, solve_flow, solve_flow_rk4, velocity

BOOK_1D = torch.tensor([[-1.5], [0.0], [0.7], [2.0]], dtype=torch.float64)
P_1D = torch.tensor([0.4, 0.1, 0.3, 0.2], dtype=torch.float64)


def mixture_density(y: torch.Tensor, s: float, book: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """ρ_s(y) = Σ_k p_k N(y; s c_k, (1 − s)² I) for y [N, D]."""
    var = (1 - s) ** 2
    d = book.shape[1]
    dist2 = (y[:, None, :] - s * book[None]).pow(2).sum(-1)
    return (p * torch.exp(-dist2 / (2 * var)) / (2 * math.pi * var) ** (d / 2)).sum(-1)


def continuity_residual(vel: torch.Tensor, y: torch.Tensor, s: float, book: torch.Tensor, p: torch.Tensor,
                        h: float = 1e-4) -> torch.Tensor:
    """|∂_s ρ + ∇·(ρ v)| at points y [N, D] by central differences (float64); ``vel(y, s)`` under test."""
    d_s = (mixture_density(y, s + h, book, p) - mixture_density(y, s - h, book, p)) / (2 * h)
    div = torch.zeros(len(y), dtype=torch.float64)
    for j in range(y.shape[1]):
        e = torch.zeros(y.shape[1], dtype=torch.float64)
        e[j] = h
        flux_hi = mixture_density(y + e, s, book, p) * vel(y + e, s)[:, j]
        flux_lo = mixture_density(y - e, s, book, p) * vel(y - e, s)[:, j]
        div += (flux_hi - flux_lo) / (2 * h)
    return (d_s + div).abs()


@pytest.mark.parametrize("s", [0.1, 0.5, 0.8])
def test_velocity_satisfies_continuity_equation_1d(s: float) -> None:
    y = torch.linspace(-3, 3, 41, dtype=torch.float64)[:, None]
    closed = continuity_residual(lambda x, t: velocity(x, t, BOOK_1D, P_1D.log()), y, s, BOOK_1D, P_1D)
    uniform = continuity_residual(lambda x, t: velocity(x, t, BOOK_1D, torch.zeros(4, dtype=torch.float64)),
                                  y, s, BOOK_1D, P_1D)
    scale = mixture_density(y, s, BOOK_1D, P_1D).max()
    assert closed.max() < 1e-5 * scale          # finite-difference error only (h = 1e-4, float64)
    assert uniform.max() > 1e-2 * scale         # the wrong velocity (p ignored) breaks it


def test_velocity_satisfies_continuity_equation_2d() -> None:
    gen = torch.Generator().manual_seed(0)
    book = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    p = torch.softmax(torch.randn(6, generator=gen, dtype=torch.float64), 0)
    y = torch.randn(64, 2, generator=gen, dtype=torch.float64) * 1.5
    res = continuity_residual(lambda x, t: velocity(x, t, book, p.log()), y, 0.6, book, p)
    assert res.max() < 1e-5 * mixture_density(y, 0.6, book, p).max()


def test_ode_lands_on_codewords_with_teacher_frequencies() -> None:
    gen = torch.Generator().manual_seed(1)
    book = flow_space(torch.randn(5, 3, generator=gen))
    p = torch.tensor([0.45, 0.25, 0.15, 0.1, 0.05])
    n = 6000
    noise = torch.randn(n, 3, generator=gen)
    tokens = solve_flow(noise, book, p.log().expand(n, 5), steps=48)
    freq = torch.bincount(tokens, minlength=5).double() / n
    sigma = (p.double() * (1 - p.double()) / n).sqrt()
    assert ((freq - p.double()).abs() < 4 * sigma).all(), (freq, p)


def test_euler_tokens_match_rk4_solve_and_rk4_ends_on_a_codeword() -> None:
    gen = torch.Generator().manual_seed(2)
    book = flow_space(torch.randn(8, 4, generator=gen))
    logp = torch.log_softmax(torch.randn(300, 8, generator=gen), -1)
    noise = torch.randn(300, 4, generator=gen)
    end = solve_flow_rk4(noise, book, logp, steps=400, s_end=0.999)
    nearest = torch.cdist(end, book.double()).min(-1)
    assert nearest.values.max() < 0.05           # at s = 0.999 every path sits on a codeword
    euler = solve_flow(noise, book, logp, steps=32)
    assert (euler == nearest.indices).double().mean() > 0.98   # paths near a decision boundary may flip


def test_posterior_mean_is_the_codeword_as_s_goes_to_one() -> None:
    book = flow_space(torch.randn(4, 2))
    y = book[2] * 0.999
    assert torch.allclose(posterior_mean(y, 0.999, book, torch.full((4,), -math.log(4))), book[2], atol=1e-4)


def test_bad_codebook_and_steps_are_value_errors() -> None:
    with pytest.raises(ValueError, match="codebook"):
        flow_space(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="at least 1 step"):
        solve_flow(torch.zeros(2), torch.eye(2), torch.zeros(2), steps=0)
