"""Goal Sequence: movement, egocentric view, cyclic-order rewards, the oracle's shortest path and its noise."""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.culture.gridenv import FORWARD, LEFT, RIGHT, GoalSequence, GridOracle, goal_tasks


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _task(goals: list[tuple[int, int]], order: list[int]) -> torch.Tensor:
    return torch.tensor([[c for xy in goals for c in xy] + order])


def test_goals_in_order_pay_plus_one_and_a_wrong_goal_minus_one():
    # start (1, 3) facing +x; goals: type 0 at (2, 3), type 1 at (3, 3), type 2 at (6, 6); order 0 -> 1 -> 2
    env = GoalSequence(1, 2, GridOracle(1.0), fixed_tasks=_task([(2, 3), (3, 3), (6, 6)], [0, 1, 2]),
                       trial_length=6)
    env.reset(_gen())
    out = env.step(torch.tensor([FORWARD]), _gen())
    assert out.reward.item() == 1.0 and out.score.item() == 1.0 and env.pos.tolist() == [[2, 3]]
    out = env.step(torch.tensor([FORWARD]), _gen())
    assert out.reward.item() == 1.0 and env.progress.item() == 2
    env.step(torch.tensor([LEFT]), _gen())                       # face −y, step off and come back onto goal 1
    env.step(torch.tensor([FORWARD]), _gen())
    env.step(torch.tensor([LEFT]), _gen())
    env.step(torch.tensor([LEFT]), _gen())
    assert env.trial.item() == 1 and env.pos.tolist() == [[1, 3]]     # 6 steps: trial over, agent back at start


def test_wrong_goal_and_walls():
    env = GoalSequence(1, 1, GridOracle(1.0), fixed_tasks=_task([(3, 3), (2, 3), (6, 6)], [0, 1, 2]))
    env.reset(_gen())
    out = env.step(torch.tensor([FORWARD]), _gen())                 # (2, 3) is type 1, but type 0 is due
    assert out.reward.item() == -1.0 and env.progress.item() == 0
    env.step(torch.tensor([RIGHT]), _gen())                          # face +y
    for _ in range(5):
        env.step(torch.tensor([FORWARD]), _gen())
    assert env.pos.tolist() == [[2, 6]]                              # stopped at the edge


def test_view_is_egocentric_and_shows_goals_and_edges():
    env = GoalSequence(1, 1, GridOracle(1.0), fixed_tasks=_task([(2, 3), (0, 0), (6, 6)], [0, 1, 2]))
    env.reset(_gen())
    view = env.view(torch.zeros(1)).view(3, 3, 5)                    # [row v, col u, channels]
    assert view[0, 1, 1] == 1.0          # facing +x, the goal of type 0 at (2, 3) is straight ahead (top middle)
    env.heading[:] = 2                   # face −x: the goal is now behind (bottom middle)
    view = env.view(torch.zeros(1)).view(3, 3, 5)
    assert view[2, 1, 1] == 1.0 and view[0, 1, 0] == 0.0
    env.pos[:] = torch.tensor([0, 3])    # at the left edge facing −x: the cells ahead are outside
    assert (env.view(torch.zeros(1)).view(3, 3, 5)[0, :, 0] == 1.0).all()
    assert env.obs_dim == env.reset(_gen()).shape[1] == 9 * 5 + 9


def test_sharp_oracle_walks_the_cycle_and_is_seen_only_when_visible():
    tasks = goal_tasks(256, 7, 3, _gen(1))
    env = GoalSequence(256, 2, GridOracle(0.0), fixed_tasks=tasks, trial_length=50)
    env.reset(_gen(2))
    for _ in range(49):
        env.step(torch.zeros(256, dtype=torch.long), _gen(3))      # the agent only turns
    # in 49 steps on a 7x7 grid a perfect walker completes at least 3 goals of the cycle
    assert (env.others.progress >= 3).all()
    env.others.body[:] = env.pos + torch.tensor([1, 0])             # put the oracle right in front (facing +x)
    env.heading[:] = 0
    seen = env.view(torch.ones(256)).view(256, 9, 5)[:, 1, 4]
    hidden = env.view(torch.zeros(256)).view(256, 9, 5)[:, 1, 4]
    inside = (env.pos[:, 0] < 6)
    assert seen[inside].eq(1).all() and hidden.eq(0).all()


def test_noisy_oracle_is_slower():
    tasks = goal_tasks(256, 7, 3, _gen(1))
    done = []
    for eps in (0.0, 0.8):
        env = GoalSequence(256, 2, GridOracle(eps), fixed_tasks=tasks, trial_length=50)
        env.reset(_gen(2))
        for _ in range(40):
            env.step(torch.zeros(256, dtype=torch.long), _gen(3))
        done.append(env.others.progress.float().mean().item())
    assert done[0] > 2 * done[1]


def test_goal_tasks_are_distinct_cells_off_the_start():
    t = goal_tasks(500, 7, 3, _gen(4))
    xy = t[:, :6].view(500, 3, 2)
    assert not (xy == torch.tensor([1, 3])).all(-1).any()
    assert (xy[:, 0] != xy[:, 1]).any(-1).all() and (xy[:, 1] != xy[:, 2]).any(-1).all()
    assert (t[:, 6:].sort(1).values == torch.arange(3)).all()
    with pytest.raises(ValueError, match="num_goals"):
        GoalSequence(2, 2, GridOracle(0.1), num_goals=1)


def test_goal_sequence_trains_with_its_oracle():
    from fewstep.nodes.culture.ppo import PPOConfig
    from fewstep.nodes.culture.runs import EnvConfig, train_in_context

    env = EnvConfig("goal_sequence", size=5, length=8, num_trials=2, num_others=1, oracle_strength=3.0)
    policy = train_in_context(env, PPOConfig(num_envs=4, num_steps=8, total_steps=64, minibatches=2), 8, 8, seed=0)
    assert policy.net.cfg.obs_dim == 54 and policy.net.cfg.num_actions == 3 and len(policy.history) == 2
