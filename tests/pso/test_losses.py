"""PSO's losses on hand-made numbers: preference rule, online clipped log-ratio loss, offline hinge / DPO, the naive
denoising baseline."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.pso.losses import DiffusionLoss, OfflinePSOLoss, OnlinePSOLoss, preference


def test_preference_is_a_pareto_comparison_with_ties():
    r_a, r_b = torch.tensor([0.9, 0.1, 0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5, 0.45])
    assert preference(r_a, r_b).tolist() == [[1, -1], [-1, 1], [0, 0], [1, -1]]
    assert preference(r_a, r_b, tie=0.1).tolist() == [[1, -1], [-1, 1], [0, 0], [0, 0]]
    # two rewards: A better on one, worse on the other -> incomparable
    two_a, two_b = torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert preference(two_a, two_b).tolist() == [[0, 0], [1, -1]]


def test_online_loss_pushes_the_winner_up_the_loser_down_within_the_clamp():
    loss_fn = OnlinePSOLoss(beta=50.0, clip=0.1)
    lr_a = torch.zeros(1, 3, requires_grad=True)
    lr_b = torch.zeros(1, 3, requires_grad=True)
    loss = loss_fn(lr_a, lr_b, torch.tensor([[1.0, -1.0]]))
    assert loss.item() == pytest.approx(math.log(2))
    loss.sum().backward()
    # d/dlogρ_A of -log σ(β Σ...) / J at 0 = -β/2 / J: raise A's ratio, lower B's
    torch.testing.assert_close(lr_a.grad, torch.full((1, 3), -50 / 2 / 3))
    torch.testing.assert_close(lr_b.grad, torch.full((1, 3), 50 / 2 / 3))


def test_online_loss_stops_at_the_ratio_clamp_and_ignores_ties():
    loss_fn = OnlinePSOLoss(beta=50.0, clip=0.1)
    lr = torch.tensor([[0.2, 0.05]], requires_grad=True)          # 0.2 > log 1.1: clamped, no gradient
    loss_fn(lr, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]])).sum().backward()
    assert lr.grad[0, 0] == 0 and lr.grad[0, 1] < 0
    tie = torch.tensor([[0.03, -0.02]], requires_grad=True)
    value = loss_fn(tie, tie.detach() * 2, torch.zeros(1, 2))
    value.sum().backward()
    assert value.item() == pytest.approx(math.log(2)) and torch.all(tie.grad == 0)


def test_offline_hinge_and_dpo_values():
    m_pos, m_neg = torch.tensor([0.2, 0.5]), torch.tensor([0.4, 0.1])
    hinge = OfflinePSOLoss(beta=5.0, prior_weight=0.5, objective="hinge")
    # relu(1 - 5 (m⁻ - m⁺)) + 0.5 m⁻: [relu(1 - 1) + 0.2, relu(1 + 2) + 0.05]
    torch.testing.assert_close(hinge(m_pos, m_neg), torch.tensor([0.2, 3.05]))
    dpo = OfflinePSOLoss(beta=5.0, prior_weight=0.0, objective="dpo")
    ref_pos, ref_neg = torch.tensor([0.3, 0.5]), torch.tensor([0.3, 0.1])
    # -log σ(5 [(0.3 - 0.3) - (0.2 - 0.4)]) = -log σ(1);  second pair: model = reference -> log 2
    torch.testing.assert_close(dpo(m_pos, m_neg, ref_pos, ref_neg),
                               torch.tensor([-math.log(1 / (1 + math.exp(-1.0))), math.log(2)]))
    with pytest.raises(ValueError, match="reference errors"):
        dpo(m_pos, m_neg)
    with pytest.raises(ValueError, match="objective"):
        OfflinePSOLoss(objective="l2")


def test_naive_diffusion_loss_is_zero_for_an_oracle_and_one_for_a_zero_predictor(toy):
    from fewstep.nodes.core.train.vp import VPNet

    _, student, _, _ = toy
    sched = student.schedule
    x0 = torch.randn(4096, 2, generator=torch.Generator().manual_seed(0))

    class Oracle(torch.nn.Module):                      # knows x0, so predicts the exact ε of any x_t
        def forward(self, x, t, cond, timestep_cond=None):
            return (x - sched.alpha_t(t)[:, None] * x0) / sched.sigma_t(t)[:, None]

    class Zero(torch.nn.Module):
        def forward(self, x, t, cond, timestep_cond=None):
            return torch.zeros_like(x)

    loss_fn = DiffusionLoss()
    oracle = loss_fn(VPNet(Oracle(), sched, "eps"), x0, torch.zeros(4096, 2), torch.Generator().manual_seed(1))
    zero = loss_fn(VPNet(Zero(), sched, "eps"), x0, torch.zeros(4096, 2), torch.Generator().manual_seed(1))
    assert oracle.abs().max() < 1e-3
    assert zero.mean().item() == pytest.approx(1.0, abs=0.05)            # E ε² = 1 (4096 x 2 draws: ±0.02)
