"""MLCM stage 1's optional perceptual and preference terms, and the real-latents state source, on the toy.

Stand-in callables replace EffNet and the scorer here (the toy's "latents" are 2-d points); the node-level
run with the real zoo networks is in test_node_terms.py. Every loss is evaluated twice from the same seed, so
the base consistency part is identical and any difference is the optional term.
"""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.core.train.distill import DistillConfig
from fewstep.nodes.core.train.toy import toy_pool
from fewstep.nodes.mlcm.losses import MLCDLoss
from fewstep.nodes.mlcm.train import make_loss


def _loss_and_grad(toy, loss: MLCDLoss, latents: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
    """Mean loss on a fixed batch (seed 7) and the gradient of the student's trainable parameters."""
    teacher, student, _, _ = toy
    pool = toy_pool()
    batch = pool.batch(16, torch.Generator().manual_seed(7))
    if latents is not None:
        batch.latents = latents
    params = [p for p in student.net.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    value = loss(student, batch, teacher=teacher).mean()
    value.backward()
    grad = torch.cat([p.grad.flatten() for p in params])
    for p in params:
        p.grad = None
    return float(value.detach()), grad


class Spy:
    """Counts calls of a wrapped callable (checks a weight-0 term is never evaluated)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


def _features(x: torch.Tensor) -> torch.Tensor:
    # a fixed non-linear stand-in Φ: [B, 2] -> [B, 8]
    w = torch.linspace(-2.0, 2.0, 16).view(2, 8)
    return torch.tanh(x @ w)


def _reward(x0: torch.Tensor, batch) -> torch.Tensor:
    # prefers x0 near the origin; checks the batch's prompts reach the term
    assert batch.prompts is not None and len(batch.prompts) == x0.shape[0]
    return -(x0 ** 2).sum(1)


BASE = dict(num_segments=2, skip=100, substeps=2, guidance=1.0)


def test_perceptual_term_adds_weighted_feature_distance_and_changes_the_gradient(toy):
    base, g_base = _loss_and_grad(toy, MLCDLoss(**BASE))
    off_spy = Spy(_features)
    off, g_off = _loss_and_grad(toy, MLCDLoss(**BASE, perceptual=off_spy, perceptual_weight=0.0))
    assert off == base and torch.equal(g_off, g_base) and off_spy.calls == 0
    one, g_one = _loss_and_grad(toy, MLCDLoss(**BASE, perceptual=_features, perceptual_weight=1.0))
    two, _ = _loss_and_grad(toy, MLCDLoss(**BASE, perceptual=_features, perceptual_weight=2.0))
    assert one > base + 1e-4
    assert two - base == pytest.approx(2 * (one - base), rel=1e-4)   # the term is linear in its weight
    assert (g_one - g_base).norm() > 1e-3 * g_base.norm()


def test_preference_term_is_a_weighted_hinge_and_changes_the_gradient(toy):
    base, g_base = _loss_and_grad(toy, MLCDLoss(**BASE))
    off_spy = Spy(_reward)
    off, g_off = _loss_and_grad(toy, MLCDLoss(**BASE, reward=off_spy, reward_weight=0.0))
    assert off == base and torch.equal(g_off, g_base) and off_spy.calls == 0
    # margin 1 > any reward (<= 0): the hinge is active, adding weight * (1 + |x0|^2) >= weight
    on, g_on = _loss_and_grad(toy, MLCDLoss(**BASE, reward=_reward, reward_weight=0.5))
    assert on - base >= 0.5 - 1e-5
    assert (g_on - g_base).norm() > 1e-3 * g_base.norm()
    # a margin below every reward switches the hinge off again
    low, g_low = _loss_and_grad(toy, MLCDLoss(**BASE, reward=_reward, reward_weight=0.5, reward_margin=-1e6))
    assert low == pytest.approx(base, abs=1e-7) and torch.allclose(g_low, g_base, atol=1e-8)


def test_config_wires_the_terms_and_rejects_misuse():
    cfg = DistillConfig(method="mlcm", perceptual_weight=0.3, reward_weight=0.2, reward_margin=0.5)
    loss = make_loss(cfg, perceptual=_features, reward=_reward)
    assert (loss.perceptual, loss.perceptual_weight) == (_features, 0.3)
    assert (loss.reward, loss.reward_weight, loss.reward_margin) == (_reward, 0.2, 0.5)
    assert cfg.fingerprint() != DistillConfig(method="mlcm").fingerprint()    # no resume across term settings
    with pytest.raises(ValueError, match="perceptual feature map"):
        make_loss(cfg, reward=_reward)
    with pytest.raises(ValueError, match="reward function"):
        make_loss(cfg, perceptual=_features)
    with pytest.raises(ValueError, match="stage-1 loss"):
        DistillConfig(method="slam", reward_weight=1.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        DistillConfig(perceptual_weight=-1.0)


def test_real_state_source_noises_the_given_latents(toy):
    teacher, _, _, _ = toy
    loss = MLCDLoss(**BASE, state_source="real")
    batch = toy_pool().batch(16, torch.Generator().manual_seed(3))
    batch.latents = torch.randn(16, 2, generator=torch.Generator().manual_seed(4)) + 5.0
    t = torch.arange(16) * 60
    batch.generator = torch.Generator().manual_seed(11)
    states = loss.states(teacher, t, batch)
    # x_t = α_t x0 + σ_t ε with ε the generator's next draw (independent computation of the same formula)
    eps = torch.randn(16, 2, generator=torch.Generator().manual_seed(11))
    a = teacher.schedule.alphas_cumprod[t].sqrt()[:, None]
    assert torch.allclose(states, a * batch.latents + (1 - a ** 2).sqrt() * eps, atol=1e-6)
    batch.latents = None
    with pytest.raises(ValueError, match="needs batch.latents"):
        loss.states(teacher, t, batch)


def test_real_state_source_loss_depends_on_the_latents(toy):
    loss = MLCDLoss(**BASE, state_source="real")
    near, _ = _loss_and_grad(toy, loss, torch.zeros(16, 2))
    again, _ = _loss_and_grad(toy, loss, torch.zeros(16, 2))
    far, _ = _loss_and_grad(toy, loss, torch.full((16, 2), 3.0))
    assert near == again and far != near
