"""One generation step on CPU: demonstrators replay from their stored state, generations are ranked and
resumed from their checkpoints, the in-context trainer resumes, in-weights generations train and rank."""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.culture.accumulate import InWeightsConfig, PolicyOthers, play_episode
from fewstep.nodes.culture.agent import AgentConfig, PopulationActorCritic, make_agent
from fewstep.nodes.culture.envs import MemoryOracles, MemorySequence
from fewstep.nodes.culture.ppo import PPOConfig
from fewstep.nodes.culture.runs import (
    EnvConfig,
    run_in_context,
    run_in_weights,
    train_in_context,
    trial_curve,
)

ENV = EnvConfig("memory_sequence", size=3, length=4, num_trials=3, num_others=2)
TINY = PPOConfig(num_envs=4, num_steps=8, total_steps=4 * 8 * 2, epochs=1, minibatches=2)


@pytest.mark.parametrize("core", ["gru", "s5"])
def test_demonstrators_restart_from_their_stored_state_at_every_trial(core):
    net = make_agent(ENV.agent(8, 8, core), seed=3)
    s = net.state_size
    h0, o0 = torch.randn(5, 2, s), torch.rand(5, 2, ENV.agent(8, 8).obs_dim)
    others = PolicyOthers(net, h0, o0)
    env = MemorySequence(5, 3, 4, 3, others)
    gen = torch.Generator().manual_seed(0)
    env.reset(gen)
    _, _, expect = net.step(o0.reshape(1, 10, -1), h0.reshape(1, 10, -1), torch.zeros(1, 10, dtype=torch.bool))
    assert torch.allclose(others.h, expect.view(5, 2, s))
    wrong = (env.next_digit() + 1) % 3                     # every row errs: every trial restarts
    env.step(wrong, gen)
    assert torch.allclose(others.h, expect.view(5, 2, s))
    right = env.next_digit()
    env.step(right, gen)                                    # mid-trial: the state moves on
    assert not torch.allclose(others.h, expect.view(5, 2, s))


def test_play_episode_counts_trials_and_keeps_the_final_trial_start():
    torch.manual_seed(0)
    net = PopulationActorCritic(ENV.agent(8, 8), seed=1)
    env = MemorySequence(32, 3, 4, 3, MemoryOracles(2, 0.0, accuracy=1.0))
    ep = play_episode(net, env, torch.Generator().manual_seed(1), follow_others=True)
    # following a perfect oracle: every trial is the full 4 digits; oracles are hidden in the final trial
    # but the follower reads their action directly, so it stays perfect there too
    assert ep.scores.shape == (32, 3) and (ep.scores == 4).all()
    assert ep.reset_state.shape == (32, 8) and ep.reset_obs[:, 3].eq(1).all()   # trial_done flag of that obs


def test_generations_rank_members_and_resume_from_checkpoints(tmp_path):
    policy = train_in_context(ENV, TINY, 8, 8, seed=0)
    gens = run_in_context(policy, 2, tasks=3, population=2, seed=0, folder=tmp_path / "g")
    assert len(gens) == 2 and gens[1].scores.shape == (3, 2, 3)
    for g in gens:
        assert (g.scores[:, 1, -1] >= g.scores[:, 0, -1]).all()             # best member last
    assert len(list((tmp_path / "g").glob("step_*.safetensors"))) == 2
    more = run_in_context(policy, 3, tasks=3, population=2, seed=0, folder=tmp_path / "g")
    assert len(more) == 3 and torch.equal(more[1].scores, gens[1].scores)
    assert len(trial_curve(policy, 6, 3, seed=0)) == 6


def test_in_context_training_resumes_from_its_checkpoint(tmp_path):
    first = train_in_context(ENV, TINY, 8, 8, seed=0, folder=tmp_path, checkpoint_every=1)
    again = train_in_context(ENV, TINY, 8, 8, seed=0, folder=tmp_path, checkpoint_every=1)
    assert len(again.history) == len(first.history) == 2
    for a, b in zip(first.net.state_dict().values(), again.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    longer = PPOConfig(**{**TINY.__dict__, "total_steps": 4 * 8 * 3})
    resumed = train_in_context(ENV, longer, 8, 8, seed=0, folder=tmp_path / "x", checkpoint_every=1)
    assert [h["update"] for h in resumed.history] == [0.0, 1.0, 2.0]


def test_in_weights_generations_train_rank_and_resume(tmp_path):
    env = EnvConfig("memory_sequence", size=3, length=3, num_trials=1, num_others=2)
    iw = InWeightsConfig(population=2, generations=2, eval_episodes=4)
    res = run_in_weights(env, TINY, iw, 8, 8, seed=0, folder=tmp_path)
    assert len(res.scores) == 2 and all(s[0] <= s[1] for s in res.scores)
    assert res.best.members == 1 and len(res.curves[0]) == TINY.num_updates
    again = run_in_weights(env, TINY, iw, 8, 8, seed=0, folder=tmp_path)
    assert again.scores == res.scores
    reset = run_in_weights(env, TINY, InWeightsConfig(2, 2, 4, resets=True), 8, 8, seed=0)
    assert len(reset.best_scores()) == 2


def test_tsp_generations_report_tours():
    env = EnvConfig("tsp", size=4, num_trials=2, num_others=2)
    policy = train_in_context(env, TINY, 8, 8, seed=0)
    gens = run_in_context(policy, 1, tasks=4, population=2, seed=0)
    tours = gens[0].tours[gens[0].tours.isfinite()]
    # a complete 4-city tour in the unit square is at least 2·(longest distance from the start) and ≤ 4·√2
    assert ((tours > 0) & (tours <= 4 * 2 ** 0.5)).all()
    assert AgentConfig(env.agent(8, 8).obs_dim, 4).obs_dim == 4 * 3 + 3
