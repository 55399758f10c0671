"""Goal Sequence generations: the previous generation's frozen agent as a body in the grid (GridDemonstrator)."""

from __future__ import annotations

import torch
from torch import Tensor

from fewstep.nodes.culture.accumulate import in_context_generations
from fewstep.nodes.culture.agent import make_agent
from fewstep.nodes.culture.gridenv import FORWARD, LEFT, START, GoalSequence, GridDemonstrator, GridOracle
from fewstep.nodes.culture.runs import EnvConfig, Policy, run_in_context, trial_curve

OTHER = 4            # the "other body here" channel of a window cell (outside, 3 goal types, other)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _Always(torch.nn.Module):
    """A frozen one-member "policy" that always plays ``action``; its state counts the steps it has taken
    and it records every observation it is given."""

    members, state_size = 1, 1

    def __init__(self, action: int) -> None:
        super().__init__()
        self.action, self.seen = action, []

    def step(self, obs: Tensor, h: Tensor, reset: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self.seen.append(obs[0].clone())
        logits = torch.full((*obs.shape[:2], 3), -1e4)
        logits[..., self.action] = 0.0
        return logits, torch.zeros(obs.shape[:2]), h + 1


def _env(demo: GridDemonstrator | GridOracle, vis: float, trial_length: int = 6) -> GoalSequence:
    # 7x7 grid; goal type 0 at (4, 3) is first in the order, types 1 and 2 far away
    task = torch.tensor([[4, 3, 0, 0, 6, 6, 0, 1, 2]])
    return GoalSequence(1, 2, demo, fixed_tasks=task, trial_length=trial_length, vis_prob=vis)


def _demo(action: int = FORWARD, rows: int = 1, obs_dim: int = 54) -> GridDemonstrator:
    return GridDemonstrator(_Always(action), torch.full((rows, 1, 1), 10.0), torch.zeros(rows, 1, obs_dim))


def test_demonstrator_body_moves_by_the_frozen_policy_and_restarts_each_trial():
    demo = _demo(FORWARD)
    env = _env(demo, vis=0.0)
    env.reset(_gen())
    assert demo.body.tolist() == [[2, 3]] and demo.h.flatten().tolist() == [11.0]   # START + 1 step forward
    for t in range(5):
        env.step(torch.tensor([LEFT]), _gen())
        assert demo.body.tolist() == [[min(3 + t, 6), 3]]                # forward along +x, stops at the edge
    assert demo.progress.item() == 1                                     # it entered goal type 0 at (4, 3)
    assert demo.h.flatten().tolist() == [16.0]                           # one network step per learner step
    env.step(torch.tensor([LEFT]), _gen())                               # the 6th step ends the learner's trial
    assert env.trial.item() == 1
    # restarted at START facing +x from the stored state (10), then took its first step of the new trial
    assert demo.body.tolist() == [[START[0] + 1, START[1]]] and demo.heading.item() == 0
    assert demo.progress.item() == 0 and demo.h.flatten().tolist() == [11.0]


def test_a_turning_policy_turns_the_body_in_place():
    demo = _demo(LEFT)
    env = _env(demo, vis=0.0)
    env.reset(_gen())
    env.step(torch.tensor([LEFT]), _gen())
    assert demo.body.tolist() == [list(START)] and demo.heading.item() == 2          # two left turns: facing −x


def test_demonstrator_sees_its_own_window_and_reward():
    demo = _demo(FORWARD)
    env = _env(demo, vis=1.0)
    env.reset(_gen())
    for _ in range(3):                   # it observes from (2, 3), (3, 3), then (4, 3), the goal it just entered
        env.step(torch.tensor([LEFT]), _gen())
    first, _, second, third = (o[0] for o in demo.net.seen)
    assert torch.equal(first, demo.o0[0, 0])                              # the trial starts from the stored obs
    window = second[:45].view(3, 3, 5)                                    # from (3, 3), facing +x
    assert window[0, 1, 1] == 1.0                                         # goal type 0 straight ahead of it
    assert window[1, 1, OTHER] == 0 and window[..., OTHER].sum() == 0     # it never sees the learner
    assert second[45:49].tolist() == [1, 0, 0, 0] and second[49:52].tolist() == [0, 0, 1]   # facing +x, went forward
    assert second[-1] == 0.0 and third[-1] == 1.0                         # its own reward: +1 for the right goal


def test_learner_sees_the_demonstrator_only_when_visible():
    for vis, expect in ((1.0, 1.0), (0.0, 0.0)):
        env = _env(_demo(FORWARD), vis=vis)
        window = env.reset(_gen())[0, :45].view(3, 3, 5)                  # learner at START facing +x
        assert window[0, 1, OTHER] == expect                              # the body one cell ahead, at (2, 3)
        assert window[..., OTHER].sum() == expect


def test_the_schedule_shows_the_demonstrator_less_each_trial_and_never_in_the_last():
    rows = 64
    env = GoalSequence(rows, 3, _demo(LEFT, rows=rows), fixed_tasks=torch.tensor([[4, 3, 0, 0, 6, 6, 0, 1, 2]] * rows),
                       trial_length=4)
    env.auto_reset = False
    seen, obs, gen = [], env.reset(_gen()), _gen(1)
    for _ in range(12):                  # both turn in place at START: the body is always in the centre cell
        seen.append(obs[:, :45].view(rows, 3, 3, 5)[:, 1, 1, OTHER].sum().item())
        obs = env.step(torch.full((rows,), LEFT), gen).obs
    # visible with p = 1, 1/2, 0 in trials 0, 1, 2; a trial's first obs comes from the previous trial's last step
    assert seen[:5] == [rows] * 5 and 0 < sum(seen[5:9]) < 4 * rows and seen[9:] == [0] * 3


def test_one_generation_step_on_a_tiny_grid_runs_on_cpu():
    env = EnvConfig("goal_sequence", size=5, length=6, num_trials=2, num_others=1, oracle_strength=2.0)
    net = make_agent(env.agent(8, 8), seed=0)
    made = []

    def maker(batch: int, others: object, fixed: Tensor | None, k: int) -> GoalSequence:
        made.append(others)
        return env.make(batch, others, fixed, k, "cpu")

    gens = in_context_generations(net, maker, env.tasks(3, "cpu"), 2, 2, env.first_others(), 2, _gen(),
                                  demonstrators=env.demonstrators())
    assert isinstance(made[0], GridOracle) and isinstance(made[1], GridDemonstrator)
    assert gens[1].scores.shape == (3, 2, 2) and gens[1].reset_state.shape == (3, 2, net.state_size)
    # generation 1 replays generation 0's best member (last after sorting) of the same task
    assert torch.equal(made[1].h0[:, 0], gens[0].reset_state[:, -1].repeat_interleave(2, 0))
    policy = Policy(net, env, social=True)
    assert [len(g.trial_means()) for g in run_in_context(policy, 2, 3, 2, seed=0)] == [2, 2]


def test_oracle_curve_scores_the_oracle_body():
    sharp = EnvConfig("goal_sequence", size=5, length=20, num_trials=2, num_others=1, oracle_strength=1e6)
    noisy = EnvConfig("goal_sequence", size=5, length=20, num_trials=2, num_others=1, oracle_strength=0.1)
    policy = Policy(make_agent(sharp.agent(8, 8), seed=0), sharp, social=True)
    best = trial_curve(policy, 2, 64, seed=0, follow_oracle=True)
    policy.env = noisy
    worse = trial_curve(policy, 2, 64, seed=0, follow_oracle=True)
    assert len(best) == 2 and min(best) > 2.0 and max(worse) < min(best) / 2


def test_wrong_goal_penalty_is_configurable_and_kept_out_of_old_run_names():
    from fewstep.nodes.culture.runs import config_fields

    task = torch.tensor([[3, 3, 2, 3, 6, 6, 0, 1, 2]])             # (2, 3) holds type 1, but type 0 is due
    rewards = []
    for penalty in (1.0, 0.0):
        env = GoalSequence(1, 1, GridOracle(1.0), fixed_tasks=task, penalty=penalty)
        env.reset(_gen())
        rewards.append(env.step(torch.tensor([FORWARD]), _gen()).reward.item())
    assert rewards == [-1.0, 0.0]
    assert "penalty" not in config_fields(EnvConfig(), None)["env"]
    assert config_fields(EnvConfig("goal_sequence", 5, penalty=0.0), None)["env"]["penalty"] == 0.0


def test_environment_node_sets_the_goal_penalty_and_old_graphs_keep_the_code_default() -> None:
    from fewstep.nodes.culture.nodes import CultureEnvironment

    widgets = dict(environment="goal_sequence", size=5, trial_length=20, num_trials=4, num_others=1,
                   oracle_strength=2.0, task_seed=420)
    assert CultureEnvironment.execute(**widgets, penalty=0.0).values[0].penalty == 0.0
    assert CultureEnvironment.execute(**widgets).values[0].penalty == 1.0      # a graph saved before the widget
    [penalty] = [i for i in CultureEnvironment.define_schema().inputs if i.name == "penalty"]
    assert penalty.optional
