"""ASD with the "dmd" weighting: the gradient formula against a hand computation on a toy teacher, and the
reparameterised loss ½‖z − sg(z − grad)‖² whose autograd gradient w.r.t. the renders is exactly grad."""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.prd.asd import ASDLoss, dmd_gradient, t_min_at
from fewstep.nodes.zoo.multiview.models import Teacher


class _ToyEps(torch.nn.Module):
    """ε(x, t, text, cam) = 0.5 x + text[:, :1] (broadcast): conditional and unconditional differ by text."""

    def forward(self, x, t, text, camera):
        return 0.5 * x + text[:, :1, None, None]


def _toy_teacher() -> Teacher:
    return Teacher(_ToyEps(), torch.linspace(0.99, 0.01, 1000))


def test_loss_gradient_wrt_renders_is_grad():
    torch.manual_seed(0)
    z = torch.randn(3, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    loss = ASDLoss()(z, grad, objects=1, views=1)
    (dz,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(dz, grad, rtol=0, atol=1e-12)
    assert float(loss.detach()) == pytest.approx(0.5 * float(grad.pow(2).sum()))
    # per-object, per-view normalisation scales the gradient and nothing else
    (dz2,) = torch.autograd.grad(ASDLoss()(z, grad, objects=2, views=3), z)
    torch.testing.assert_close(dz2, grad / 6, rtol=0, atol=1e-12)


def test_dmd_gradient_matches_hand_computation():
    teacher = _toy_teacher()
    torch.manual_seed(1)
    z = torch.rand(2, 3, 4, 4) * 2 - 1
    text = torch.tensor([[0.3] + [0.0] * 7, [-0.2] + [0.0] * 7])
    cam = torch.zeros(2, 4)
    loss = ASDLoss(cfg=5.0)
    grad = loss.gradient(teacher, z, text, cam, t_min=0.3, generator=torch.Generator().manual_seed(7))
    # replay the draws: t then (t+ jitter) then the noise, from the same seed
    gen = torch.Generator().manual_seed(7)
    t = torch.randint(300, 980, (2,), generator=gen)
    torch.rand(t.shape, generator=gen)
    noise = torch.randn(z.shape, generator=gen)
    a = teacher.alphas[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * z + (1 - a).sqrt() * noise
    eps_c, eps_u = 0.5 * x_t + text[:, :1, None, None], 0.5 * x_t
    first = eps_u + 5.0 * (eps_c - eps_u)
    x0_first, x0_second = (x_t - (1 - a).sqrt() * first) / a.sqrt(), (x_t - (1 - a).sqrt() * eps_c) / a.sqrt()
    w = (z - x0_first).abs().mean(dim=(1, 2, 3), keepdim=True)
    expected = (x0_second - x0_first) / (w + 0.1)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dmd_gradient(z, x_t, a, first, eps_c, 0.1), expected, rtol=1e-5, atol=1e-6)


def test_t_min_ramps_from_half_to_two_percent():
    assert t_min_at(0.0) == 0.5 and t_min_at(1.0) == pytest.approx(0.02) and t_min_at(2.0) == pytest.approx(0.02)
    assert t_min_at(0.5) == pytest.approx(0.26)
