"""Dynamics and rewards of the vectorised environments (Memory Sequence, TSP) and their oracles."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.culture.envs import (
    MemoryOracles,
    MemorySequence,
    SilentOthers,
    TravellingSalesman,
    TSPOracles,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _memseq(seq: list[list[int]], trials: int = 2, others=None, **kw) -> MemorySequence:
    fixed = torch.tensor(seq)
    return MemorySequence(fixed.shape[0], 3, fixed.shape[1], trials, others or SilentOthers(2), fixed_tasks=fixed, **kw)


def test_memory_sequence_rewards_reset_on_mistake_and_trial_count():
    env = _memseq([[0, 1, 2], [2, 2, 1]], auto_reset=False)
    obs = env.reset(_gen())
    assert obs.shape == (2, env.obs_dim) and env.obs_dim == 3 * 3 + 3
    out = env.step(torch.tensor([0, 1]), _gen())           # row 0 right, row 1 wrong
    assert out.reward.tolist() == [1.0, -1.0] and out.trial_done.tolist() == [False, True]
    assert out.score.tolist() == [1.0, 0.0] and out.trial.tolist() == [0, 0]
    assert env.t.tolist() == [1, 0] and env.trial.tolist() == [0, 1]
    # the observation carries own action one-hot, trial flag and reward
    assert out.obs[0, :5].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert out.obs[1, :5].tolist() == [0.0, 1.0, 0.0, 1.0, -1.0]
    out = env.step(torch.tensor([1, 2]), _gen())
    out = env.step(torch.tensor([2, 0]), _gen())           # row 0 completes the 3-digit trial
    assert out.trial_done[0] and out.reward[0] == 1.0 and env.trial[0] == 1 and env.t[0] == 0
    # row 1: trial 1 went 2 (right), then 0 for a 2 (wrong) -> second trial over -> episode done
    assert out.done.tolist() == [False, True]


def test_memory_sequence_auto_reset_draws_a_fresh_task():
    env = MemorySequence(64, 3, 5, 1, SilentOthers(1))
    env.reset(_gen(1))
    first = env.seq.clone()
    out = env.step((env.next_digit() + 1) % 3, _gen(2))     # every row wrong: every episode ends (K = 1)
    assert out.done.all() and (env.t == 0).all() and (env.trial == 0).all()
    assert not torch.equal(env.seq, first)


def test_visibility_anneals_over_trials_and_is_off_in_the_last_trial():
    env = _memseq([[0] * 4] * 4000, trials=3, others=MemoryOracles(2, 0.5))
    gen = _gen(3)
    vis = [env.visibility(torch.full((4000,), k), gen).mean().item() for k in range(3)]
    assert vis[0] == 1.0 and abs(vis[1] - 0.5) < 0.03 and vis[2] == 0.0
    env.vis_prob = 0.25
    assert abs(env.visibility(torch.zeros(4000, dtype=torch.long), gen).mean().item() - 0.25) < 0.03


def test_memory_oracles_accuracy_is_bounded_sorted_and_shown_masked():
    env = MemorySequence(4000, 3, 6, 4, MemoryOracles(3, 0.5))
    env.reset(_gen(4))
    p = env.others.p
    assert (p >= 0).all() and (p <= 1 - 1 / 1.5 + 1e-6).all() and (p[:, 1:] >= p[:, :-1]).all()
    right = (env.others.last == env.next_digit()[:, None]).float().mean(0)
    expect = p.mean(0) + (1 - p.mean(0)) / 3                     # right on purpose, or by a lucky guess
    assert torch.allclose(right, expect, atol=0.03)
    perfect = MemorySequence(8, 3, 6, 2, MemoryOracles(2, 0.0, accuracy=1.0))
    obs = perfect.reset(_gen(5))
    shown = obs[:, 5:11].view(8, 2, 3).argmax(-1)
    assert (shown == perfect.next_digit()[:, None]).all() and (obs[:, -1] == 1).all()


def test_tsp_rewards_tour_length_and_revisit():
    pos = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]] * 2)
    env = TravellingSalesman(2, 3, 2, SilentOthers(1), fixed_tasks=pos, auto_reset=False)
    env.reset(_gen())
    out = env.step(torch.tensor([1, 0]), _gen())           # row 1 revisits the start city
    assert out.reward[0].item() == pytest.approx((math.sqrt(2) - 1) / math.sqrt(2))
    assert out.reward[1].item() == -1.0 and out.trial_done.tolist() == [False, True] and out.score[1] == 0
    out = env.step(torch.tensor([2, 1]), _gen())           # row 0 completes 0 -> 1 -> 2 (-> 0)
    step = (math.sqrt(2) - 1) / math.sqrt(2)
    home = (math.sqrt(2) - math.sqrt(2)) / math.sqrt(2)
    assert out.trial_done[0] and out.reward[0].item() == pytest.approx(step + home)
    assert out.tour[0].item() == pytest.approx(2 + math.sqrt(2))
    assert env.cur[0] == 0 and env.visited[0].tolist() == [True, False, False]


def test_tsp_sharp_oracle_plays_the_nearest_unvisited_city():
    pos = torch.tensor([[[0.0, 0.0], [0.9, 0.9], [0.1, 0.0], [0.5, 0.5]]])
    env = TravellingSalesman(1, 4, 2, TSPOracles(2, 1.0, temperature=1e-3), fixed_tasks=pos)
    env.reset(_gen())
    assert env.others.last.tolist() == [[2, 2]]
    env.step(torch.tensor([2]), _gen())
    assert env.others.last.tolist() == [[3, 3]]


def test_same_seed_same_rollout():
    def run() -> torch.Tensor:
        env = MemorySequence(16, 3, 5, 3, MemoryOracles(2, 1.0))
        gen = _gen(7)
        obs = [env.reset(gen)]
        for _ in range(12):
            obs.append(env.step(torch.randint(0, 3, (16,), generator=gen), gen).obs)
        return torch.stack(obs)
    assert torch.equal(run(), run())


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="num_trials"):
        MemorySequence(4, 3, 5, 0, SilentOthers(1))
    with pytest.raises(ValueError, match="fixed_tasks"):
        MemorySequence(4, 3, 5, 2, SilentOthers(1), fixed_tasks=torch.zeros(3, 5, dtype=torch.long))
