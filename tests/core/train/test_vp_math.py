"""VP helpers: prediction conversions, pseudo-Huber, LCM boundary scalings, teacher DDIM, segment jump."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.core.train.batches import DistillBatch, segment_jump, teacher_states
from fewstep.nodes.core.train.toy import make_teacher
from fewstep.nodes.core.train.vp import (
    VPNet,
    guided_x0_eps,
    lcm_boundary_scalings,
    pseudo_huber,
    teacher_ddim,
    to_x0_eps,
)


@pytest.mark.parametrize("kind", ["eps", "v", "x0"])
def test_prediction_conversions_recover_x0_and_eps(kind):
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    a = torch.tensor([0.9, 0.5, 0.2, 0.07])
    s = (1 - a**2).sqrt()
    x = a[:, None] * x0 + s[:, None] * eps
    out = {"eps": eps, "v": a[:, None] * eps - s[:, None] * x0, "x0": x0}[kind]
    got_x0, got_eps = to_x0_eps(out, x, a, s, kind)
    torch.testing.assert_close(got_x0, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_eps, eps, atol=1e-4, rtol=1e-4)


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        to_x0_eps(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1), "flow")


def test_pseudo_huber_values():
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    # elementwise sqrt(d² + c²) - c averaged: c = 0 → mean |d| = 3.5
    assert pseudo_huber(a, b, 0.0).item() == pytest.approx(3.5)
    # c = 1: ((sqrt(10) - 1) + (sqrt(17) - 1)) / 2
    assert pseudo_huber(a, b, 1.0).item() == pytest.approx((math.sqrt(10) + math.sqrt(17)) / 2 - 1)
    # large c: ≈ d² / (2c) averaged = (9 + 16) / 2 / (2 · 100); next term d⁴/8c³ is 5e-4 relative
    assert pseudo_huber(a, b, 100.0).item() == pytest.approx(12.5 / 200, rel=2e-3)


def test_lcm_boundary_scalings_enforce_identity_at_zero():
    c_skip, c_out = lcm_boundary_scalings(torch.tensor([0, 1, 19, 999]))
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0
    assert c_skip[2].item() < 1e-5 and c_out[2].item() == pytest.approx(1.0, abs=1e-5)
    assert c_skip[1].item() == pytest.approx(0.25 / (100 + 0.25))


def test_teacher_ddim_substeps_converge_to_one_fine_solve():
    teacher = make_teacher()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=gen)
    cond = torch.zeros(64, 2)
    t, s = torch.full((64,), 600), torch.full((64,), 200)
    fine = teacher_ddim(teacher, x, t, s, cond, None, 1.0, substeps=200)
    err1 = (teacher_ddim(teacher, x, t, s, cond, None, 1.0, substeps=1) - fine).norm()
    err8 = (teacher_ddim(teacher, x, t, s, cond, None, 1.0, substeps=8) - fine).norm()
    assert err8 < 0.25 * err1          # DDIM is a first-order solver of the PF-ODE
    same = teacher_ddim(teacher, x, t, t, cond, None, 1.0, substeps=3)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=1e-5)


def test_cfg_is_the_linear_extrapolation_of_two_passes():
    teacher = make_teacher()
    x, t = torch.randn(8, 2), torch.full((8,), 500)
    cond, uncond = torch.tensor([[1.0, 0.0]]).expand(8, 2), torch.zeros(1, 2)
    x0_c, _ = teacher.x0_eps(x, t, cond)
    x0_u, _ = teacher.x0_eps(x, t, uncond.expand(8, 2))
    x0_w, _ = guided_x0_eps(teacher, x, t, cond, uncond, 3.0)
    torch.testing.assert_close(x0_w, x0_u + 3.0 * (x0_c - x0_u))


def test_segment_jump_is_identity_at_the_segment_start():
    teacher = make_teacher()
    net = VPNet(torch.nn.Linear(2, 2), teacher.schedule, "x0")
    net.net = lambda x, t, c, tc=None: torch.sin(3 * x)   # any x̂0 at all
    x, t = torch.randn(5, 2), torch.tensor([124, 499, 874, 300, 10])
    torch.testing.assert_close(segment_jump(net, x, t, t, None), x, atol=1e-5, rtol=1e-5)


def test_teacher_states_start_from_noise_and_follow_the_teacher():
    teacher = make_teacher()
    gen = torch.Generator().manual_seed(0)
    cond = torch.zeros(4, 2)
    t_m = torch.tensor([999, 700, 300, 10])
    batch = DistillBatch(cond=cond, uncond=None, shape=(4, 2), generator=gen)
    states = teacher_states(teacher, t_m, batch, 1.0, state_step=125)
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(states[0], noise[0])                       # t_m = T-1: the noise itself
    # sample 1 (t_m = 700): ceil(299/125) = 3 equal DDIM steps 999 → 899 → 800 → 700
    x = noise[1:2]
    for a, b in ((999, 899), (899, 800), (800, 700)):
        x = teacher_ddim(teacher, x, torch.tensor([a]), torch.tensor([b]), cond[:1], None, 1.0)
    torch.testing.assert_close(states[1:2], x, atol=1e-5, rtol=1e-5)
