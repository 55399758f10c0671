"""GAE against a hand computation, the clipped PPO loss on a tiny case, the population network's members
being independent, and PPO actually improving a policy."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.culture.agent import AgentConfig, PopulationActorCritic, clip_per_member
from fewstep.nodes.culture.envs import MemorySequence, SilentOthers
from fewstep.nodes.culture.ppo import PPOConfig, PPOLoss, gae, train


def test_gae_matches_a_hand_computation_with_an_episode_end():
    g, lam = 0.9, 0.5
    r = torch.tensor([1.0, 0.0, 2.0])
    v = torch.tensor([0.5, 1.0, 1.5])
    d = torch.tensor([0.0, 1.0, 0.0])          # the episode ends with step 1
    last = torch.tensor(2.0)
    # by hand, backwards: t=2 bootstraps V_T = 2; t=1 ends the episode (no bootstrap, no carry); t=0 carries
    d2 = 2.0 + g * 2.0 - 1.5                    # 2.3
    a2 = d2
    d1 = 0.0 - 1.0                              # -1.0
    a1 = d1
    d0 = 1.0 + g * 1.0 - 0.5                    # 1.4
    a0 = d0 + g * lam * a1                      # 1.4 - 0.45 = 0.95
    adv, targets = gae(r, v, d, last, g, lam)
    assert adv.tolist() == pytest.approx([a0, a1, a2])
    assert targets.tolist() == pytest.approx([a0 + 0.5, a1 + 1.0, a2 + 1.5])


def test_ppo_loss_tiny_case_by_hand():
    # one member, two samples, two actions; logits give π(a=0) = 0.5 for both
    logits = torch.zeros(1, 2, 2)
    actions = torch.tensor([[0, 1]])
    old_logp = torch.log(torch.tensor([[0.25, 0.8]]))     # ratios 2.0 and 0.625
    adv = torch.tensor([[1.0, -1.0]])                     # normalised: [1, -1] / (std=√2) -> ±0.7071
    value, old_value, target = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 1.0]])
    loss_fn = PPOLoss(clip=0.2, vf_coef=0.5, ent_coef=0.1)
    loss, parts = loss_fn(logits, value, actions, old_logp, old_value, adv, target)
    a = 1 / math.sqrt(2)
    # sample 0: min(2·a, 1.2·a) = 1.2a ; sample 1: min(0.625·(−a), 0.8·(−a)) = −0.8a
    actor = -(1.2 * a - 0.8 * a) / 2
    # value: sample 0 unclipped (1−2)² = 1, clipped v = 0.2: (0.2−2)² = 3.24 -> max 3.24; sample 1: 1 and 1
    value_loss = 0.5 * (3.24 + 1.0) / 2
    entropy = math.log(2)
    assert parts["actor"].item() == pytest.approx(actor, abs=1e-6)
    assert parts["value"].item() == pytest.approx(value_loss, abs=1e-6)
    assert parts["entropy"].item() == pytest.approx(entropy, abs=1e-6)
    assert loss.item() == pytest.approx(actor + 0.5 * value_loss - 0.1 * entropy, abs=1e-6)


def test_population_members_do_not_mix():
    net = PopulationActorCritic(AgentConfig(5, 3, hidden=8, embed=8), members=3, seed=1)
    obs, h = torch.randn(3, 4, 5), torch.randn(3, 4, 8)
    reset = torch.zeros(3, 4, dtype=torch.bool)
    logits, value, _ = net.step(obs, h, reset)
    obs2 = obs.clone()
    obs2[1] += 1.0
    logits2, value2, _ = net.step(obs2, h, reset)
    assert torch.equal(logits[0], logits2[0]) and torch.equal(value[2], value2[2])
    assert not torch.equal(logits[1], logits2[1])
    one = net.member([2])
    l1, v1, _ = one.step(obs[2:], h[2:], reset[2:])
    assert torch.allclose(l1[0], logits[2]) and torch.allclose(v1[0], value[2])
    # the reset flag zeroes the hidden state: a reset row ignores h
    lr, _, _ = net.step(obs, torch.randn_like(h), torch.ones_like(reset))
    lz, _, _ = net.step(obs, torch.zeros_like(h), reset)
    assert torch.allclose(lr, lz)


def test_gradient_clip_is_per_member():
    net = PopulationActorCritic(AgentConfig(4, 2, hidden=4, embed=4), members=2)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
        p.grad[1] *= 1e-4                       # member 1 has a tiny gradient
    norms = clip_per_member(net, 1.0)
    assert norms[0] > 1.0 > norms[1]
    after = torch.stack([torch.cat([p.grad[m].flatten() for p in net.parameters()]).norm() for m in range(2)])
    assert after[0].item() == pytest.approx(1.0, rel=1e-4) and after[1].item() == pytest.approx(norms[1].item())


def test_ppo_learns_a_fixed_memory_sequence():
    """In-weights MemSeq with one fixed 3-digit sequence: PPO must beat the random policy's ≈ 0.44 digits."""
    torch.manual_seed(0)
    fixed = torch.tensor([[2, 0, 1]]).expand(16, 3)
    env = MemorySequence(16, 3, 3, 1, SilentOthers(1), fixed_tasks=fixed)
    net = PopulationActorCritic(AgentConfig(env.obs_dim, 3, hidden=16, embed=16), seed=0)
    # lr 1e-2, 20 updates: all 3 digits right by the end for training seeds 0, 1, 2 (measured, 2-4 s each)
    cfg = PPOConfig(lr=1e-2, num_envs=16, num_steps=16, total_steps=16 * 16 * 20, epochs=2, minibatches=2,
                    ent_coef=0.0, anneal_lr=False)
    hist = train(net, env, cfg, seed=0)
    first = sum(h["trial_0"] for h in hist[:3]) / 3
    last = sum(h["trial_0"] for h in hist[-3:]) / 3
    assert first < 1.0 and last > 2.5, (first, last)


def test_config_errors_are_actionable():
    with pytest.raises(ValueError, match="multiple of minibatches"):
        PPOConfig(num_envs=6, minibatches=4)
    with pytest.raises(ValueError, match="less than one rollout"):
        PPOConfig(num_envs=4, num_steps=8, minibatches=2, total_steps=10)
