"""Vectorised multi-trial environments of Cook et al. (NeurIPS 2024, §3.1): B episodes as tensors.

Every environment here is a *trial environment*: an episode is K trials of the same task (RL²), and the
learner shares it with P "others" (noisy oracles in training, the previous generation in evaluation) whose
actions it may see. The observation of every step is (paper code, ``MetaMemSeq``/``MetaTSP``)::

    [ one_hot(own action) (A) | trial_done (1) | reward (1) | vis · one_hot(others' actions) (P·A) | vis (1) ]

so ``obs_dim = A·(P+1) + 3``. ``vis`` is drawn per step with probability ``(K − k − 1)/(K − 1)`` where k is
the trial of the step just taken (annealed 1 → 0 across the episode, never visible in the final trial), or
with a fixed ``vis_prob`` set by a trainer (in-weights accumulation anneals it over training).

All state is a tensor on one device; every random draw comes from the ``torch.Generator`` passed in, so a
run is reproducible from its seed on CPU and GPU alike. ``step`` resets finished episodes in place
(``auto_reset``), as gymnax's wrappers do, unless the caller turns it off (evaluation of one episode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

SQRT2 = math.sqrt(2.0)


@dataclass
class Step:
    """What ``TrialEnv.step`` returns (tensors of batch B).

    Args:
        obs: [B, obs_dim] the next observation (of the reset episode where ``done``).
        reward: [B] reward of the step taken.
        done: [B] bool, the episode ended with this step (all K trials over).
        trial_done: [B] bool, the trial ended with this step.
        trial: [B] long, the trial (0..K-1) the step belonged to.
        score: [B] the step's contribution to the trial score (MemSeq: 1 per correct digit; TSP: relu(reward)).
        tour: [B] TSP only: the tour length of trials completed with this step (NaN elsewhere).
    """

    obs: Tensor
    reward: Tensor
    done: Tensor
    trial_done: Tensor
    trial: Tensor
    score: Tensor
    tour: Tensor | None = None


class Others(Protocol):
    """The P other agents whose actions the learner may observe (oracles or a previous generation)."""

    count: int

    def reset(self, env: TrialEnv, rows: Tensor, gen: torch.Generator) -> Tensor:
        """Start a new episode in the rows of ``rows`` ([B] bool); return actions [B, P] (rows outside unused)."""
        ...

    def step(self, env: TrialEnv, action: Tensor, reward: Tensor, trial_done: Tensor,
             gen: torch.Generator) -> Tensor:
        """The others' actions [B, P] for the learner's next step, after the learner played ``action``."""
        ...


def rand(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=gen, device=gen.device)


def randint(high: int, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    return torch.randint(0, high, shape, generator=gen, device=gen.device)


class TrialEnv:
    """B parallel episodes of ``num_trials`` trials; subclasses define the task (``_task_*`` methods).

    Args:
        batch: B, the number of parallel episodes.
        num_actions: A.
        num_trials: K trials per episode (1 = a single-lifetime environment).
        others: the P observable agents (see :class:`Others`).
        fixed_tasks: if given, row i always plays task ``fixed_tasks[i]`` (the same task across generations,
            as the paper's evaluation does); else every reset draws a fresh task.
        vis_prob: None = the in-context schedule (K − k − 1)/(K − 1); a float = fixed (set by trainers).
        device: where the state lives.
    """

    def __init__(self, batch: int, num_actions: int, num_trials: int, others: Others,
                 fixed_tasks: Tensor | None = None, vis_prob: float | None = None,
                 device: torch.device | str = "cpu", auto_reset: bool = True) -> None:
        if batch < 1 or num_trials < 1 or num_actions < 2:
            raise ValueError(f"need batch >= 1, num_trials >= 1, num_actions >= 2; got {batch}, {num_trials}, "
                             f"{num_actions}")
        if fixed_tasks is not None and fixed_tasks.shape[0] != batch:
            raise ValueError(f"fixed_tasks has {fixed_tasks.shape[0]} rows for a batch of {batch}")
        self.batch, self.num_actions, self.num_trials = batch, num_actions, num_trials
        self.others, self.fixed_tasks, self.vis_prob = others, fixed_tasks, vis_prob
        self.device, self.auto_reset = torch.device(device), auto_reset
        self.trial = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.t = torch.zeros(batch, dtype=torch.long, device=self.device)

    @property
    def obs_dim(self) -> int:
        return self.num_actions * (self.others.count + 1) + 3

    @property
    def trial_steps(self) -> int:
        """The most steps one trial can take."""
        raise NotImplementedError

    def _tour(self) -> Tensor | None:
        """Tour lengths of the trials completed by the last step (TSP), else None."""
        return None

    # --- the task (subclasses) -------------------------------------------------------------------
    def _task_new(self, rows: Tensor, gen: torch.Generator) -> None:
        """Draw (or copy from ``fixed_tasks``) the task of ``rows`` and start its first trial."""
        raise NotImplementedError

    def _task_act(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Apply ``action`` [B]: (reward [B], trial_done [B] bool, score [B]); within-trial state advances."""
        raise NotImplementedError

    def _task_new_trial(self, rows: Tensor) -> None:
        """Restart the trial of ``rows`` (same task)."""
        raise NotImplementedError

    # --- the shared episode logic -----------------------------------------------------------------
    def visibility(self, trial: Tensor, gen: torch.Generator) -> Tensor:
        """[B] float 0/1: are the others visible this step? (paper Alg. 1: p_obs = 1 − k/(K−1), code form)."""
        if self.vis_prob is not None:
            p = torch.full_like(trial, 0, dtype=torch.float32) + float(self.vis_prob)
        elif self.num_trials == 1:
            p = torch.zeros_like(trial, dtype=torch.float32)
        else:
            p = (self.num_trials - trial - 1).float() / (self.num_trials - 1)
        return (rand((self.batch,), gen) < p).float()

    def _obs(self, action: Tensor | None, trial_done: Tensor, reward: Tensor, others: Tensor,
             vis: Tensor) -> Tensor:
        a = self.num_actions
        own = torch.zeros(self.batch, a, device=self.device) if action is None else \
            torch.nn.functional.one_hot(action, a).float()
        seen = torch.nn.functional.one_hot(others, a).float() * vis[:, None, None]     # [B, P, A]
        return torch.cat([own, trial_done.float()[:, None], reward[:, None], seen.flatten(1), vis[:, None]], 1)

    def reset(self, gen: torch.Generator) -> Tensor:
        """Start all B episodes; returns obs [B, obs_dim]."""
        rows = torch.ones(self.batch, dtype=torch.bool, device=self.device)
        return self._reset_rows(rows, gen, None)

    def _reset_rows(self, rows: Tensor, gen: torch.Generator, obs: Tensor | None) -> Tensor:
        self.trial = torch.where(rows, 0, self.trial)
        self.t = torch.where(rows, 0, self.t)
        self._task_new(rows, gen)
        others = self.others.reset(self, rows, gen)
        vis = self.visibility(torch.zeros_like(self.trial), gen)
        zero = torch.zeros(self.batch, device=self.device)
        fresh = self._obs(None, zero.bool(), zero, others, vis)
        return fresh if obs is None else torch.where(rows[:, None], fresh, obs)

    def step(self, action: Tensor, gen: torch.Generator) -> Step:
        """Play ``action`` [B] long in every episode."""
        reward, trial_done, score = self._task_act(action)
        trial = self.trial.clone()
        self.t = torch.where(trial_done, 0, self.t + 1)
        self.trial = self.trial + trial_done.long()
        done = trial_done & (self.trial == self.num_trials)
        self._task_new_trial(trial_done & ~done)
        others = self.others.step(self, action, reward, trial_done, gen)
        obs = self._obs(action, trial_done, reward, others, self.visibility(trial, gen))
        if self.auto_reset and bool(done.any()):
            obs = self._reset_rows(done, gen, obs)
        return Step(obs, reward, done, trial_done, trial, score, self._tour())


# ---------------------------------------------------------------------------------------------
# Memory Sequence
# ---------------------------------------------------------------------------------------------


def memory_tasks(count: int, num_types: int, length: int, gen: torch.Generator) -> Tensor:
    """``count`` random digit sequences [count, length] over ``num_types`` digits."""
    return randint(num_types, (count, length), gen)


class MemorySequence(TrialEnv):
    """Guess a hidden digit sequence (paper §3.1, code ``MetaMemSeq``): +1 for the correct next digit, −1
    for a wrong one, which also ends the trial ("reset on mistake"); a trial ends at the latest after
    ``length`` digits. The trial score is the number of correct digits (0..length).

    ``num_trials=1`` with one ``fixed_tasks`` row repeated is the in-weights ``MemSeq`` (a fixed sequence
    learnt in the weights); ``num_trials=K`` with fresh tasks is the in-context meta variant."""

    def __init__(self, batch: int, num_types: int, length: int, num_trials: int, others: Others,
                 **kw: object) -> None:
        self.num_types, self.length = num_types, length
        super().__init__(batch, num_types, num_trials, others, **kw)
        self.seq = torch.zeros(batch, length, dtype=torch.long, device=self.device)

    def _task_new(self, rows: Tensor, gen: torch.Generator) -> None:
        fresh = self.fixed_tasks if self.fixed_tasks is not None else \
            memory_tasks(self.batch, self.num_types, self.length, gen)
        self.seq = torch.where(rows[:, None], fresh.to(self.device), self.seq)

    def _task_act(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        target = self.seq.gather(1, self.t[:, None])[:, 0]
        correct = action == target
        reward = correct.float() * 2 - 1
        trial_done = ~correct | (self.t == self.length - 1)
        return reward, trial_done, correct.float()

    def _task_new_trial(self, rows: Tensor) -> None:
        """Nothing to restart: the position ``t`` is reset by the base class."""

    @property
    def trial_steps(self) -> int:
        return self.length

    def next_digit(self) -> Tensor:
        """[B] the digit the learner must play next (privileged, for oracles)."""
        return self.seq.gather(1, self.t[:, None])[:, 0]


# ---------------------------------------------------------------------------------------------
# TSP (partially observable)
# ---------------------------------------------------------------------------------------------


def tsp_tasks(count: int, num_cities: int, gen: torch.Generator) -> Tensor:
    """City positions [count, N, 2], uniform in the unit square (city 0 is the start)."""
    return rand((count, num_cities, 2), gen)


class TravellingSalesman(TrialEnv):
    """Partially observable TSP (paper §3.1, code ``MetaTSP``): the agent sees only its actions and rewards.

    Each trial starts at city 0. A move to an unvisited city j from i pays ``(√2 − ‖c_i − c_j‖)/√2``; the
    move that visits the last city also pays the return-to-start term ``(√2 − ‖c_j − c_0‖)/√2``; a move to
    a visited city pays −1 and ends the trial. The trial score is the sum of the positive rewards, and a
    complete trial's tour length is ``Σ‖c_i − c_j‖`` over its N moves including the return (``tour_length``).

    Deviation from the code (a measured off-by-one there): the code ends a trial only at N steps, where every
    action is a revisit, so its return-to-start term is never paid; here a trial ends after the N−1 moves
    that visit every city."""

    def __init__(self, batch: int, num_cities: int, num_trials: int, others: Others, **kw: object) -> None:
        self.num_cities = num_cities
        super().__init__(batch, num_cities, num_trials, others, **kw)
        self.pos = torch.zeros(batch, num_cities, 2, device=self.device)
        self.cur = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.visited = torch.zeros(batch, num_cities, dtype=torch.bool, device=self.device)
        self.length_so_far = torch.zeros(batch, device=self.device)
        self.last_tour = torch.full((batch,), float("nan"), device=self.device)

    @property
    def trial_steps(self) -> int:
        return self.num_cities - 1

    def _tour(self) -> Tensor | None:
        return self.last_tour

    def _task_new(self, rows: Tensor, gen: torch.Generator) -> None:
        fresh = self.fixed_tasks if self.fixed_tasks is not None else tsp_tasks(self.batch, self.num_cities, gen)
        self.pos = torch.where(rows[:, None, None], fresh.to(self.device), self.pos)
        self._task_new_trial(rows)

    def _task_new_trial(self, rows: Tensor) -> None:
        start = torch.zeros_like(self.visited)
        start[:, 0] = True
        self.visited = torch.where(rows[:, None], start, self.visited)
        self.cur = torch.where(rows, 0, self.cur)
        self.length_so_far = torch.where(rows, 0.0, self.length_so_far)

    def distances_from(self, city: Tensor) -> Tensor:
        """[B, N] distances from ``city`` [B] to every city."""
        here = self.pos.gather(1, city[:, None, None].expand(-1, 1, 2))                 # [B, 1, 2]
        return (self.pos - here).norm(dim=-1)

    def _task_act(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        revisit = self.visited.gather(1, action[:, None])[:, 0]
        step_len = self.distances_from(self.cur).gather(1, action[:, None])[:, 0]
        self.visited = self.visited | torch.nn.functional.one_hot(action, self.num_cities).bool()
        complete = ~revisit & self.visited.all(1)
        home = self.distances_from(torch.zeros_like(action)).gather(1, action[:, None])[:, 0]
        reward = (SQRT2 - step_len) / SQRT2 + complete.float() * (SQRT2 - home) / SQRT2
        reward = torch.where(revisit, -1.0, reward)
        self.length_so_far = self.length_so_far + step_len
        self.last_tour = torch.where(complete, self.length_so_far + home, float("nan"))
        self.cur = torch.where(revisit, self.cur, action)
        return reward, revisit | complete, reward.clamp(min=0.0)


# ---------------------------------------------------------------------------------------------
# Others: noisy oracles (training) and silent ones
# ---------------------------------------------------------------------------------------------


class MemoryOracles:
    """P noisy oracles of Memory Sequence (paper Alg. 1; code ``MetaMemSeq`` without ``other_network``).

    Oracle j plays the learner's correct next digit with probability p_j, else a uniform digit. Per episode
    ``p_j = 1 − 1/u``, ``u ~ U(1, 1 + max_strength)`` (so p_j ≤ 1 − 1/(1+m)), sorted ascending: the most
    accurate oracle sits in the last slot. ``max_strength = 0`` gives random others (generation 0 of the
    evaluation); ``accuracy`` overrides the draw with one fixed p for all."""

    def __init__(self, count: int, max_strength: float, accuracy: float | None = None) -> None:
        self.count, self.max_strength, self.accuracy = count, max_strength, accuracy
        self.p: Tensor | None = None
        self.last = torch.zeros(0, count, dtype=torch.long)      # [B, P] the actions just played

    def _play(self, env: MemorySequence, gen: torch.Generator) -> Tensor:
        assert self.p is not None
        right = rand((env.batch, self.count), gen) < self.p
        guess = randint(env.num_types, (env.batch, self.count), gen)
        self.last = torch.where(right, env.next_digit()[:, None], guess)
        return self.last

    def reset(self, env: TrialEnv, rows: Tensor, gen: torch.Generator) -> Tensor:
        assert isinstance(env, MemorySequence), "MemoryOracles need a MemorySequence"
        u = 1.0 + rand((env.batch, self.count), gen) * self.max_strength
        fresh = (1.0 - 1.0 / u).sort(1).values
        if self.accuracy is not None:
            fresh = torch.full_like(fresh, self.accuracy)
        self.p = fresh if self.p is None else torch.where(rows[:, None], fresh, self.p)
        return self._play(env, gen)

    def step(self, env: TrialEnv, action: Tensor, reward: Tensor, trial_done: Tensor,
             gen: torch.Generator) -> Tensor:
        assert isinstance(env, MemorySequence)
        return self._play(env, gen)


class TSPOracles:
    """P noisy nearest-neighbour oracles of TSP (code ``MetaTSP`` without ``other_network``).

    Oracle j samples the next city from ``softmax((−‖c_cur − c‖ − √2·visited)/τ_j)``; per episode
    ``τ_j ~ U(0, temperature_scale)``, sorted descending so the sharpest oracle sits in the last slot (the
    code sorts ascending and flips at evaluation). Deviation: the code measures distances from city 0, not
    the current city; ours is the nearest-neighbour heuristic the paper describes as a privileged oracle."""

    def __init__(self, count: int, temperature_scale: float, temperature: float | None = None) -> None:
        self.count, self.scale, self.fixed = count, temperature_scale, temperature
        self.tau: Tensor | None = None
        self.last = torch.zeros(0, count, dtype=torch.long)      # [B, P] the actions just played

    def _play(self, env: TravellingSalesman, gen: torch.Generator) -> Tensor:
        assert self.tau is not None
        logits = -env.distances_from(env.cur) - SQRT2 * env.visited.float()                 # [B, N]
        logits = logits[:, None, :] / self.tau[:, :, None].clamp(min=1e-3)                  # [B, P, N]
        gumbel = -torch.log(-torch.log(rand(tuple(logits.shape), gen).clamp(1e-9, 1 - 1e-9)))
        self.last = (logits + gumbel).argmax(-1)
        return self.last

    def reset(self, env: TrialEnv, rows: Tensor, gen: torch.Generator) -> Tensor:
        assert isinstance(env, TravellingSalesman), "TSPOracles need a TravellingSalesman"
        fresh = (rand((env.batch, self.count), gen) * self.scale).sort(1, descending=True).values
        if self.fixed is not None:
            fresh = torch.full_like(fresh, self.fixed)
        self.tau = fresh if self.tau is None else torch.where(rows[:, None], fresh, self.tau)
        return self._play(env, gen)

    def step(self, env: TrialEnv, action: Tensor, reward: Tensor, trial_done: Tensor,
             gen: torch.Generator) -> Tensor:
        assert isinstance(env, TravellingSalesman)
        return self._play(env, gen)


class SilentOthers:
    """P others who play uniform actions (with ``vis_prob=0`` the RL² baseline: no social information)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def reset(self, env: TrialEnv, rows: Tensor, gen: torch.Generator) -> Tensor:
        return randint(env.num_actions, (env.batch, self.count), gen)

    def step(self, env: TrialEnv, action: Tensor, reward: Tensor, trial_done: Tensor,
             gen: torch.Generator) -> Tensor:
        return randint(env.num_actions, (env.batch, self.count), gen)
