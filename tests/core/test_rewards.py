"""The reward library: known answers of the probe log-probability, the saturation rule, the weighted sum and
its per-reward gradient normalisation, and clear errors."""

from __future__ import annotations

import math
import random

import pytest
import torch

from fewstep.nodes.core.rewards import (
    ProbeReward,
    SaturationReward,
    SceneIndex,
    Term,
    WeightedRewards,
    placements,
    scene_log_prob,
)
from fewstep.nodes.zoo import data


def test_placements_follow_the_caption_grammar():
    parse = data.parse_caption
    assert placements(parse("a small red circle at the top right")) == [(2,)]
    assert len(placements(parse("a small red circle, a large blue square and a small white cross in a row"))) == 3
    rel = placements(parse("a large blue square left of a small white cross"))
    assert len(rel) == 9 and all(b - a in (1, 2) and a // 3 == b // 3 for a, b in rel)
    above = placements(parse("a large blue square above a small white cross"))
    assert all(b - a in (3, 6) and a % 3 == b % 3 for a, b in above)
    assert len(placements(parse("two small green triangles"))) == math.comb(9, 2)
    assert len(placements(parse("three small green triangles"))) == math.comb(9, 3)


def test_true_scene_cells_are_among_its_placements():
    for scene in data.make_split("train", 40, seed=3):
        cells = tuple(o.row * 3 + o.col for o in scene.objects)
        assert cells in placements(data.parse_caption(data.caption(scene)))


def test_scene_log_prob_of_uniform_logits_is_the_counting_answer():
    # uniform logits: an empty cell has p = 1/7 * 1/6, an object's cell 1/7 * 1/6 * 1/2 (size), so every
    # placement has log p = 9 log(1/42) + n log(1/2) and the sum over P placements adds log P
    prompts = ["a small red circle at the top left", "two small green triangles",
               "a large blue square left of a small white cross"]
    index = SceneIndex.build(prompts)
    zeros = [torch.zeros(3, 9, k) for k in (7, 6, 2)]
    got = scene_log_prob(*zeros, index)
    base = 9 * math.log(1 / 42)
    want = [base + math.log(0.5), base + 2 * math.log(0.5) + math.log(36), base + 2 * math.log(0.5) + math.log(9)]
    assert got.tolist() == pytest.approx(want, abs=1e-4)


def test_scene_log_prob_is_zero_when_the_probe_is_certain():
    index = SceneIndex.build(["a small red circle at the top left"])
    c, s, z = torch.full((1, 9, 7), -50.0), torch.full((1, 9, 6), -50.0), torch.full((1, 9, 2), -50.0)
    c[0, :, 0] = s[0, :, 0] = 50.0                     # every cell empty ...
    c[0, 0] = s[0, 0] = -50.0
    c[0, 0, 1], s[0, 0, 1], z[0, 0, 0] = 50.0, 50.0, 50.0   # ... but a small red circle in cell 0
    assert float(scene_log_prob(c, s, z, index)) == pytest.approx(0.0, abs=1e-6)
    moved = SceneIndex.build(["a small red circle at the bottom right"])
    assert float(scene_log_prob(c, s, z, moved)) < -100


def test_probe_reward_prefers_the_true_caption_of_real_renders(renders):
    images, scenes, captions = renders
    rng = random.Random(0)
    wrong = [data.caption(data.perturb(s, rng)) for s in scenes]
    reward = ProbeReward()
    true, false = reward(images, captions), reward(images, wrong)
    assert (true > false + 0.05).all(), (true, false)
    assert (true > -0.05).all() and (true <= 1e-6).all()


def test_probe_reward_is_differentiable_and_ascent_raises_it(renders):
    images, _, captions = renders
    reward = ProbeReward()
    x = (images * 0.5 + 0.25).clone().requires_grad_(True)   # washed-out pictures: the probe is unsure
    before = reward(x, captions)
    before.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    stepped = (x + 0.02 * x.grad.sign()).detach()
    assert reward(stepped, captions).mean() > before.mean()


def test_saturation_reward_known_values_and_hack():
    grey = torch.full((1, 8, 8, 3), 0.5)
    red = torch.zeros(1, 8, 8, 3)
    red[..., 0] = 1.0
    reward = SaturationReward(eps=0.01)
    assert float(reward(grey, ["x"])) == pytest.approx(0.0, abs=1e-7)
    assert float(reward(red, ["x"])) == pytest.approx(1 / 1.01, rel=1e-6)
    x = (grey + 0.01 * torch.randn(1, 8, 8, 3, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    reward(x, ["x"]).sum().backward()
    assert float(reward((x + 0.05 * x.grad.sign()).detach(), ["x"])) > float(reward(x.detach(), ["x"])) + 0.05


def _linear(scale: float, direction: torch.Tensor):
    """A reward with a known gradient: R(x) = scale * <x, direction> per sample."""
    def reward(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return scale * (images * direction).flatten(1).sum(1)
    return reward


def test_weighted_sum_and_plain_objective_gradient():
    gen = torch.Generator().manual_seed(0)
    d1, d2 = torch.randn(1, 4, 4, 3, generator=gen), torch.randn(1, 4, 4, 3, generator=gen)
    x = torch.rand(2, 4, 4, 3, generator=gen).requires_grad_(True)
    combo = WeightedRewards([("a", _linear(1000.0, d1), 1.0), ("b", _linear(1.0, d2), 2.0)])
    want = 1000.0 * (x * d1).flatten(1).sum(1) + 2.0 * (x * d2).flatten(1).sum(1)
    assert torch.allclose(combo(x, ["p", "q"]), want)
    objective, means = combo.objective(x, ["p", "q"])
    objective.backward()
    assert torch.allclose(x.grad, ((1000.0 * d1 + 2.0 * d2) / 2).expand_as(x), atol=1e-4)
    assert float(objective.detach()) == pytest.approx(float(want.detach().mean()), rel=1e-5) and set(means) == {"a", "b"}


def test_normalised_objective_balances_rewards_of_very_different_scale():
    gen = torch.Generator().manual_seed(1)
    d1, d2 = torch.randn(1, 4, 4, 3, generator=gen), torch.randn(1, 4, 4, 3, generator=gen)
    x = torch.rand(3, 4, 4, 3, generator=gen).requires_grad_(True)
    combo = WeightedRewards([Term("big", _linear(1000.0, d1), 1.0), Term("small", _linear(1e-3, d2), 2.0)],
                            normalize_grads=True)
    objective, _ = combo.objective(x, ["p"] * 3)
    objective.backward()
    # each reward's image gradient becomes a unit vector, then weighted: d1/|d1| + 2 d2/|d2|, averaged over B = 3
    want = (d1 / d1.norm() + 2.0 * d2 / d2.norm()) / 3
    assert torch.allclose(x.grad, want.expand_as(x), atol=1e-5)
    assert float(objective.detach()) == pytest.approx(float(combo(x, ["p"] * 3).detach().mean()), rel=1e-5)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"2 images need 2 prompts"):
        SaturationReward()(torch.rand(2, 8, 8, 3), ["one"])
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        SaturationReward()(torch.rand(2, 3, 8, 8), ["a", "b"])
    with pytest.raises(ValueError, match=r"prompt 1 \('a photo of a cat'\)"):
        SceneIndex.build(["a small red circle at the top left", "a photo of a cat"])
    with pytest.raises(ValueError, match="unique"):
        WeightedRewards([("a", SaturationReward(), 1.0), ("a", SaturationReward(), 1.0)])
    with pytest.raises(ValueError, match="at least one"):
        WeightedRewards([])
