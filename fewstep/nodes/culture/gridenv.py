"""Goal Sequence (paper §3.1; code ``goal_seq/env/oracle_env.py``): a grid where goals must be visited in a
hidden cyclic order, beside another body: a noisy oracle that knows the order (training, generation 0) or a
frozen agent of the previous generation (:class:`GridDemonstrator`, in-context generations).

The grid is ``size × size`` (paper 7) with ``num_goals`` goals (paper 3) of distinct types on distinct cells.
The agent starts every trial at (1, 3) facing +x (code); actions are turn left, turn right, forward. Entering
the goal of the next type in the hidden cycle pays +1 and advances the cycle; entering another goal pays
−``penalty`` (default 1; the code's ``penalty`` argument).
A trial lasts ``trial_length`` steps (code 50); an episode is K trials of the same grid and order.

The oracle body starts each trial on a random cell without a goal and walks the shortest way to its own next goal,
taking a uniform action with probability ε. The agent sees an egocentric 3×3 window (paper), turned so it
faces up: per cell [outside the grid, goal type one-hot (G), other body here (only when visible)], plus its
heading one-hot (4), its last action one-hot (3), the trial flag and the reward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fewstep.nodes.culture.accumulate import PolicyOthers
from fewstep.nodes.culture.agent import PopulationAgent
from fewstep.nodes.culture.envs import Others, TrialEnv, rand, randint

# heading d: 0 = +x, 1 = +y, 2 = −x, 3 = −y; turning left is d − 1, right is d + 1 (mod 4)
HEADINGS = torch.tensor([[1, 0], [0, 1], [-1, 0], [0, -1]])
START = (1, 3)
LEFT, RIGHT, FORWARD = 0, 1, 2


def goal_tasks(count: int, size: int, num_goals: int, gen: torch.Generator) -> Tensor:
    """[count, 3·G] long: goal cells (x, y) [2G] then the cyclic order [G], drawn off the start cell."""
    cells = rand((count, size * size), gen)
    cells[:, START[1] * size + START[0]] = 2.0                     # never on the start cell
    idx = cells.argsort(1)[:, :num_goals]
    xy = torch.stack([idx % size, idx // size], -1).flatten(1)     # [count, 2G]
    order = rand((count, num_goals), gen).argsort(1)
    return torch.cat([xy, order], 1)


def _turn_or_go(pos: Tensor, heading: Tensor, target: Tensor) -> Tensor:
    """The greedy shortest-path action toward ``target`` [B, 2] (no walls inside): close x first, then y."""
    dx, dy = target[:, 0] - pos[:, 0], target[:, 1] - pos[:, 1]
    want = torch.where(dx > 0, 0, torch.where(dx < 0, 2, torch.where(dy > 0, 1, 3)))
    diff = (want - heading) % 4
    return torch.where(diff == 0, FORWARD, torch.where(diff == 3, LEFT, RIGHT))


class GoalSequence(TrialEnv):
    """B grids of the Goal Sequence task (see the module docstring); ``others`` is a :class:`GridOracle` or a
    :class:`GridDemonstrator` (another kind shows no body)."""

    def __init__(self, batch: int, num_trials: int, others: Others, size: int = 7, num_goals: int = 3,
                 trial_length: int = 50, penalty: float = 1.0, **kw: object) -> None:
        if num_goals < 2 or num_goals + 1 > size * size:
            raise ValueError(f"need 2 <= num_goals < size² ; got {num_goals} goals on a {size}x{size} grid")
        self.size, self.num_goals, self.trial_length, self.penalty = size, num_goals, trial_length, penalty
        super().__init__(batch, 3, num_trials, others, **kw)
        dev = self.device
        self.goals = torch.zeros(batch, num_goals, 2, dtype=torch.long, device=dev)
        self.order = torch.zeros(batch, num_goals, dtype=torch.long, device=dev)
        self.pos = torch.tensor(START, device=dev).repeat(batch, 1)
        self.heading = torch.zeros(batch, dtype=torch.long, device=dev)
        self.progress = torch.zeros(batch, dtype=torch.long, device=dev)

    @property
    def obs_dim(self) -> int:
        return 9 * (2 + self.num_goals) + 4 + 3 + 2

    @property
    def trial_steps(self) -> int:
        return self.trial_length

    def target(self, progress: Tensor) -> Tensor:
        """[B, 2] the cell of the goal due after ``progress`` hits."""
        kind = self.order.gather(1, (progress % self.num_goals)[:, None])[:, 0]
        return self.goals.gather(1, kind[:, None, None].expand(-1, 1, 2))[:, 0]

    def goal_at(self, pos: Tensor) -> Tensor:
        """[B] the goal index at ``pos`` [B, 2], −1 where none."""
        hit = (self.goals == pos[:, None, :]).all(-1)                                       # [B, G]
        return torch.where(hit.any(1), hit.float().argmax(1), -1)

    def move(self, pos: Tensor, heading: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Apply turn/forward actions; a forward step off the grid stays put."""
        heading = torch.where(action == LEFT, (heading - 1) % 4, torch.where(action == RIGHT, (heading + 1) % 4, heading))
        ahead = pos + HEADINGS.to(pos.device)[heading]
        inside = ((ahead >= 0) & (ahead < self.size)).all(1) & (action == FORWARD)
        return torch.where(inside[:, None], ahead, pos), heading

    def _task_new(self, rows: Tensor, gen: torch.Generator) -> None:
        fresh = self.fixed_tasks if self.fixed_tasks is not None else \
            goal_tasks(self.batch, self.size, self.num_goals, gen)
        fresh = fresh.to(self.device)
        g = self.num_goals
        self.goals = torch.where(rows[:, None, None], fresh[:, : 2 * g].view(-1, g, 2), self.goals)
        self.order = torch.where(rows[:, None], fresh[:, 2 * g:], self.order)
        self._task_new_trial(rows)

    def _task_new_trial(self, rows: Tensor) -> None:
        self.pos = torch.where(rows[:, None], torch.tensor(START, device=self.device), self.pos)
        self.heading = torch.where(rows, 0, self.heading)
        self.progress = torch.where(rows, 0, self.progress)

    def _task_act(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        new_pos, self.heading = self.move(self.pos, self.heading, action)
        right, reward = self.enter(self.pos, new_pos, self.progress)
        self.pos, self.progress = new_pos, self.progress + right.long()
        return reward, self.t == self.trial_length - 1, right.float()

    def window(self, pos: Tensor, heading: Tensor, other: Tensor | None = None,
               shown: Tensor | None = None) -> Tensor:
        """[B, 9·(2+G)] the egocentric 3×3 window of a body at ``pos`` [B, 2] facing ``heading`` [B], rotated so
        it faces −y (up); ``other`` [B, 2] is the other body's cell, marked in the rows where ``shown`` [B] bool
        (None: nobody seen)."""
        b, dev = self.batch, self.device
        rel = torch.stack(torch.meshgrid(torch.arange(-1, 2, device=dev), torch.arange(-1, 2, device=dev),
                                         indexing="xy"), -1).view(9, 2)                       # (x, y) offsets
        # rotate the window: facing d, a view offset (u, v) maps to world offset R_d (u, v)
        # (ahead in the view is (0, −1); screen coordinates, y down, so the agent's right is +x in the view)
        rot = torch.tensor([[[0, -1], [1, 0]], [[-1, 0], [0, -1]], [[0, 1], [-1, 0]], [[1, 0], [0, 1]]], device=dev)
        cells = pos[:, None, :] + torch.einsum("bij,kj->bki", rot[heading], rel)             # [B, 9, 2]
        outside = ((cells < 0) | (cells >= self.size)).any(-1)
        goal_here = (cells[:, :, None, :] == self.goals[:, None, :, :]).all(-1)              # [B, 9, G]
        seen = (cells == other[:, None, :]).all(-1) & shown[:, None] if other is not None and shown is not None \
            else torch.zeros(b, 9, dtype=torch.bool, device=dev)
        return torch.cat([outside[..., None], goal_here, seen[..., None]], -1).float().flatten(1)

    def view(self, vis: Tensor) -> Tensor:
        """[B, 9·(2+G)] the learner's window; the other body (oracle or demonstrator) shows where ``vis`` > 0."""
        body = self.others.body if isinstance(self.others, (GridOracle, GridDemonstrator)) else None
        return self.window(self.pos, self.heading, body, vis > 0)

    def observation(self, window: Tensor, heading: Tensor, action: Tensor | None, trial_done: Tensor,
                    reward: Tensor) -> Tensor:
        """[B, obs_dim] = [window, one_hot(heading) (4), one_hot(last action) (3), trial_done, reward]."""
        own = torch.zeros(self.batch, 3, device=self.device) if action is None else \
            torch.nn.functional.one_hot(action, 3).float()
        facing = torch.nn.functional.one_hot(heading, 4).float()
        return torch.cat([window, facing, own, trial_done.float()[:, None], reward[:, None]], 1)

    def _obs(self, action: Tensor | None, trial_done: Tensor, reward: Tensor, others: Tensor,
             vis: Tensor) -> Tensor:
        return self.observation(self.view(vis), self.heading, action, trial_done, reward)

    def enter(self, pos: Tensor, new_pos: Tensor, progress: Tensor) -> tuple[Tensor, Tensor]:
        """A body moved ``pos`` → ``new_pos`` [B, 2] with ``progress`` [B] hits so far: (right [B] bool, the
        reward [B]: +1 for entering the goal due next, −penalty for entering another goal, else 0)."""
        entered = (new_pos != pos).any(1)
        right = entered & (new_pos == self.target(progress)).all(1)
        wrong = entered & (self.goal_at(new_pos) >= 0) & ~right
        return right, right.float() - self.penalty * wrong.float()


class GridOracle:
    """One noisy oracle body in a :class:`GoalSequence` grid: shortest path to its own next goal, a uniform
    action with probability ``epsilon``. Restarts with every trial of the learner on a random cell."""

    count = 1

    def __init__(self, epsilon: float) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = epsilon
        self.body = torch.zeros(0, 2, dtype=torch.long)
        self.heading = torch.zeros(0, dtype=torch.long)
        self.progress = torch.zeros(0, dtype=torch.long)

    def _place(self, env: GoalSequence, rows: Tensor, gen: torch.Generator) -> None:
        if self.body.shape[0] != env.batch:
            self.body = torch.zeros(env.batch, 2, dtype=torch.long, device=env.device)
            self.heading = torch.zeros(env.batch, dtype=torch.long, device=env.device)
            self.progress = torch.zeros(env.batch, dtype=torch.long, device=env.device)
        # a random free cell: never on a goal (standing on its target, it could never "enter" it)
        score = rand((env.batch, env.size * env.size), gen)
        score.scatter_(1, env.goals[..., 1] * env.size + env.goals[..., 0], 2.0)
        cell = score.argmin(1)
        spot = torch.stack([cell % env.size, cell // env.size], 1)
        self.body = torch.where(rows[:, None], spot, self.body)
        self.heading = torch.where(rows, randint(4, (env.batch,), gen), self.heading)
        self.progress = torch.where(rows, 0, self.progress)

    def _walk(self, env: GoalSequence, gen: torch.Generator) -> Tensor:
        greedy = _turn_or_go(self.body, self.heading, env.target(self.progress))
        action = torch.where(rand((env.batch,), gen) < self.epsilon, randint(3, (env.batch,), gen), greedy)
        new_body, self.heading = env.move(self.body, self.heading, action)
        right, _ = env.enter(self.body, new_body, self.progress)
        self.progress, self.body = self.progress + right.long(), new_body
        return action[:, None]

    def reset(self, env: TrialEnv, rows: Tensor, gen: torch.Generator) -> Tensor:
        assert isinstance(env, GoalSequence), "GridOracle needs a GoalSequence"
        self._place(env, rows, gen)
        return torch.zeros(env.batch, 1, dtype=torch.long, device=env.device)

    def step(self, env: TrialEnv, action: Tensor, reward: Tensor, trial_done: Tensor,
             gen: torch.Generator) -> Tensor:
        assert isinstance(env, GoalSequence)
        self._place(env, trial_done, gen)
        return self._walk(env, gen)


class GridDemonstrator(PolicyOthers):
    """A frozen agent of the previous generation with a body of its own in a :class:`GoalSequence` grid: the
    "other" of in-context accumulation on Goal Sequence (paper Alg. 2 with the oracle replaced by generation g).

    At every trial start of the learner the body restarts where the learner does (START, facing +x, no goal
    hit yet) and the network restarts from ``reset_state`` / ``reset_obs``: its own state and observation at the
    start of its final trial, so it replays that trial. Afterwards it acts on its own observation, built as the
    learner's is: its egocentric window (nobody else shown: its final trial never showed its own demonstrator),
    heading, last action, trial flag 0 and the reward of its own last move (+1 / −penalty for the right / a
    wrong goal of its own cycle). The learner sees the body through :meth:`GoalSequence.view` with the environment's
    visibility (annealed 1 → 0 over the trials). Its returned action is the one just played ([B, 1]).

    Args:
        net: the frozen agent (one member).
        reset_state: [B, 1, S].  reset_obs: [B, 1, D] (D = the environment's ``obs_dim``).
    """

    def __init__(self, net: PopulationAgent, reset_state: Tensor, reset_obs: Tensor) -> None:
        super().__init__(net, reset_state, reset_obs)
        if self.count != 1:
            raise ValueError(f"Goal Sequence has one other body; got {self.count} demonstrator slots")
        b, dev = reset_state.shape[0], reset_state.device
        self.body = torch.tensor(START, device=dev).repeat(b, 1)                      # [B, 2]
        self.heading = torch.zeros(b, dtype=torch.long, device=dev)
        self.progress = torch.zeros(b, dtype=torch.long, device=dev)
        self.reward = torch.zeros(b, device=dev)

    def _restart(self, rows: Tensor) -> None:
        self.body = torch.where(rows[:, None], torch.tensor(START, device=rows.device), self.body)
        self.heading = torch.where(rows, 0, self.heading)
        self.progress = torch.where(rows, 0, self.progress)
        self.reward = torch.where(rows, 0.0, self.reward)
        self.h = torch.where(rows[:, None, None], self.h0, self.h)

    def _play(self, env: GoalSequence, obs: Tensor, rows: Tensor, gen: torch.Generator) -> Tensor:
        """Sample the rows' actions from ``obs`` [B, 1, D] and move their bodies; returns [B, 1]."""
        action = self._act(obs, rows, gen)[:, 0]
        new_body, heading = env.move(self.body, self.heading, action)
        right, reward = env.enter(self.body, new_body, self.progress)
        self.body = torch.where(rows[:, None], new_body, self.body)
        self.heading = torch.where(rows, heading, self.heading)
        self.progress = torch.where(rows, self.progress + right.long(), self.progress)
        self.reward = torch.where(rows, reward, self.reward)
        return self.last

    def reset(self, env: TrialEnv, rows: Tensor, gen: torch.Generator) -> Tensor:
        assert isinstance(env, GoalSequence), "GridDemonstrator needs a GoalSequence"
        self._restart(rows)
        return self._play(env, self.o0, rows, gen)

    def step(self, env: TrialEnv, action: Tensor, reward: Tensor, trial_done: Tensor,
             gen: torch.Generator) -> Tensor:
        assert isinstance(env, GoalSequence)
        own = env.observation(env.window(self.body, self.heading), self.heading, self.last[:, 0],
                              torch.zeros_like(trial_done), self.reward)                 # [B, D]
        obs = torch.where(trial_done[:, None, None], self.o0, own[:, None, :])
        self._restart(trial_done)
        return self._play(env, obs, torch.ones_like(trial_done), gen)
