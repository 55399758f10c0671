"""The S5 core: HiPPO-N initialisation, zero-order hold against the matrix exponential, the parallel scan against
the step-by-step recurrence (layer and whole agent, values and gradients), state resets at episode starts,
members staying independent, demonstrators replaying S5 states, and PPO with an S5 agent learning a memory
task beyond chance."""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.culture.agent import AgentConfig, PopulationS5ActorCritic, make_agent
from fewstep.nodes.culture.envs import MemorySequence, SilentOthers
from fewstep.nodes.culture.ppo import PPOConfig, train
from fewstep.nodes.culture.runs import EnvConfig, run_in_context, train_in_context
from fewstep.nodes.culture.s5 import S5Layer, discretize_zoh, hippo_legs, hippo_n, linear_scan


def _agent(members: int = 2, seed: int = 1) -> PopulationS5ActorCritic:
    net = make_agent(AgentConfig(7, 3, hidden=16, embed=8, core="s5", ssm_layers=2), members=members, seed=seed)
    assert isinstance(net, PopulationS5ActorCritic)
    return net


def test_hippo_n_diagonalises_the_normal_part_of_legs():
    n = 8
    lam, v = hippo_n(n)
    p = torch.sqrt(torch.arange(n, dtype=torch.float64) + 0.5)
    s = hippo_legs(n) + p[:, None] * p[None, :]
    assert torch.allclose(s + s.T, -torch.eye(n, dtype=torch.float64), atol=1e-12)    # −½I + skew-symmetric
    assert torch.allclose(v @ torch.diag(lam) @ v.conj().T, s.to(torch.complex128), atol=1e-10)
    assert torch.allclose(lam.real, torch.full((n,), -0.5, dtype=torch.float64))
    # eigenvalues come in conjugate pairs: the layer keeps one of each
    assert torch.allclose(lam.imag.sort().values, (-lam.imag).sort().values, atol=1e-10)
    layer = S5Layer(members=2, width=3, state=n, gen=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.complex(layer.lam_re[0, 0], layer.lam_im[0, 0]), lam[: n // 2].to(torch.complex64))


def test_zoh_matches_the_matrix_exponential_on_one_state():
    # x' = λx + b·u with complex λ, b, as the real 2-state system [[re, −im], [im, re]]; ZOH over Δ with u held
    # constant is the top-right block of exp([[A, B], [0, 0]]·Δ) (Van Loan), independent of S5's closed form
    lam, b, step = torch.tensor(-0.7 + 2.3j, dtype=torch.complex128), torch.tensor(1.5 - 0.4j, dtype=torch.complex128), 0.3
    lam_bar, b_bar = discretize_zoh(lam[None], b[None, None], torch.tensor([step], dtype=torch.float64))
    aug = torch.zeros(3, 3, dtype=torch.float64)
    aug[:2, :2] = torch.tensor([[lam.real, -lam.imag], [lam.imag, lam.real]])
    aug[:2, 2] = torch.tensor([b.real, b.imag])
    e = torch.linalg.matrix_exp(aug * step)
    assert torch.allclose(torch.tensor([lam_bar[0].real, lam_bar[0].imag]), e[:2, 0], atol=1e-12)
    assert torch.allclose(torch.tensor([b_bar[0, 0].real, b_bar[0, 0].imag]), e[:2, 2], atol=1e-12)


def test_linear_scan_equals_the_recurrence():
    gen = torch.Generator().manual_seed(0)
    for steps in (1, 2, 5, 16, 37):                       # powers of two and not
        a = torch.complex(torch.rand(steps, 3, 4, generator=gen), torch.rand(steps, 3, 4, generator=gen)) * 0.9
        a[steps // 2] = 0                                  # a reset cuts the past
        b = torch.complex(torch.randn(steps, 3, 4, generator=gen), torch.randn(steps, 3, 4, generator=gen))
        x0 = torch.complex(torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen))
        x, expect = x0, []
        for t in range(steps):
            x = a[t] * x + b[t]
            expect.append(x)
        assert torch.allclose(linear_scan(a, b, x0), torch.stack(expect), atol=1e-5)


def test_agent_scan_equals_stepping_values_and_gradients():
    net = _agent()
    gen = torch.Generator().manual_seed(3)
    steps, rows = 13, 5
    obs = torch.randn(steps, 2, rows, 7, generator=gen)
    h0 = torch.randn(2, rows, net.state_size, generator=gen)
    resets = torch.rand(steps, 2, rows, generator=gen) < 0.2
    logits, values, h_end = net.sequence(obs, h0, resets)
    (logits.square().sum() + values.sum()).backward()
    scan_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    h, out_l, out_v = h0, [], []
    for t in range(steps):
        lg, v, h = net.step(obs[t], h, resets[t])
        out_l.append(lg)
        out_v.append(v)
    step_l, step_v = torch.stack(out_l), torch.stack(out_v)
    (step_l.square().sum() + step_v.sum()).backward()
    # float32: both paths differ only in the order of the products (measured max 5e-7 on values)
    assert torch.allclose(logits, step_l, atol=1e-5) and torch.allclose(values, step_v, atol=1e-5)
    assert torch.allclose(h_end, h, atol=1e-5)
    for g_scan, p in zip(scan_grads, net.parameters(), strict=True):
        assert torch.allclose(g_scan, p.grad, atol=1e-4, rtol=1e-3)


def test_state_resets_where_an_episode_starts():
    net = _agent()
    gen = torch.Generator().manual_seed(4)
    obs = torch.randn(9, 2, 3, 7, generator=gen)
    resets = torch.zeros(9, 2, 3, dtype=torch.bool)
    resets[4] = True                                                   # every row starts an episode at t = 4
    logits, values, h_end = net.sequence(obs, torch.randn(2, 3, net.state_size, generator=gen), resets)
    fresh_l, fresh_v, fresh_h = net.sequence(obs[4:], net.initial_state(3), resets[4:])
    assert torch.allclose(logits[4:], fresh_l, atol=1e-6) and torch.allclose(h_end, fresh_h, atol=1e-6)
    assert not torch.allclose(logits[3], net.sequence(obs[3:4], net.initial_state(3), resets[3:4])[0][0])
    # one step: the reset flag makes the incoming state irrelevant
    one = torch.ones(2, 3, dtype=torch.bool)
    a = net.step(obs[0], torch.randn(2, 3, net.state_size, generator=gen), one)
    b = net.step(obs[0], net.initial_state(3), one)
    assert all(torch.allclose(x, y) for x, y in zip(a, b, strict=True))


def test_s5_members_stay_independent_and_copy_out():
    net = _agent(members=3)
    obs, h = torch.randn(3, 4, 7), torch.randn(3, 4, net.state_size)
    reset = torch.zeros(3, 4, dtype=torch.bool)
    logits, _, h1 = net.step(obs, h, reset)
    obs2 = obs.clone()
    obs2[1] += 1.0
    logits2, _, _ = net.step(obs2, h, reset)
    assert torch.equal(logits[0], logits2[0]) and not torch.equal(logits[1], logits2[1])
    one = net.member([2])
    assert isinstance(one, PopulationS5ActorCritic)
    l1, _, h2 = one.step(obs[2:], h[2:], reset[2:])
    assert torch.allclose(l1[0], logits[2]) and torch.allclose(h2[0], h1[2])


def test_s5_in_context_generations_replay_s5_states():
    env = EnvConfig("memory_sequence", size=3, length=4, num_trials=3, num_others=2)
    tiny = PPOConfig(num_envs=4, num_steps=8, total_steps=4 * 8 * 2, epochs=1, minibatches=2)
    policy = train_in_context(env, tiny, 8, 8, seed=0, core="s5", ssm_layers=1)
    assert isinstance(policy.net, PopulationS5ActorCritic) and policy.net.state_size == 8
    gens = run_in_context(policy, 2, tasks=3, population=2, seed=0)
    assert gens[1].reset_state.shape == (3, 2, 8) and gens[1].reset_state.abs().sum() > 0


def test_s5_agent_learns_an_in_context_memory_task_beyond_chance():
    """A new 3-digit binary sequence per episode, 3 trials, no oracles: chance scores 0.5 + 0.25 + 0.125 =
    0.875 per trial; remembering the sequence across trials (in the S5 state) is the only way past it."""
    env = MemorySequence(32, 2, 3, 3, SilentOthers(1))
    env.vis_prob = 0.0
    net = make_agent(AgentConfig(env.obs_dim, 2, hidden=16, embed=16, core="s5", ssm_layers=1), seed=1)
    # 40 updates: final trial 2.3 / 2.8 for seeds 0 / 1 (measured, 2.5-5 s on one CPU thread)
    cfg = PPOConfig(lr=1e-2, num_envs=32, num_steps=16, total_steps=32 * 16 * 40, epochs=2, minibatches=2,
                    ent_coef=0.0, anneal_lr=False)
    hist = train(net, env, cfg, seed=1)
    first = sum(h["trial_2"] for h in hist[:5]) / 5
    last = sum(h["trial_2"] for h in hist[-5:]) / 5
    assert first < 1.2 and last > 1.8, (first, last)
    assert sum(h["trial_2"] - h["trial_0"] for h in hist[-5:]) / 5 > 0.8      # later trials use the memory


def test_unknown_core_is_refused():
    with pytest.raises(ValueError, match="unknown recurrent core"):
        AgentConfig(3, 2, core="lstm")
    with pytest.raises(ValueError, match="even state size"):
        AgentConfig(3, 2, hidden=7, core="s5")
