"""Cultural accumulation (Cook et al. 2024): in-context (Alg. 2) and in-weights (Alg. 3) generations.

In-context: one RL² agent θ trained with noisy oracles (Alg. 1, :func:`fewstep.nodes.culture.ppo.train`) is
frozen; generation g+1 plays K trials of the *same* tasks while generation g's agents act beside it, each
replaying its final trial from the hidden state it had at the start of that trial (re-reset at every trial
of the learner). Generations differ only in their hidden states.

In-weights: each generation is a population trained from scratch (or from the previous best with its heads
reset) by PPO in an environment whose others are the previous generation's agents, visible with a
probability annealed 1 → 0 over training; the best member by final score becomes a demonstrator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fewstep.nodes.culture.agent import AgentConfig, PopulationAgent, make_agent
from fewstep.nodes.culture.envs import Others, SilentOthers, TrialEnv
from fewstep.nodes.culture.ppo import PPOConfig, local_envs
from fewstep.nodes.culture.ppo import train as ppo_train

EnvMaker = Callable[[int, Others, Tensor | None, int], TrialEnv]
"""(batch, others, fixed_tasks or None, num_trials) -> a fresh TrialEnv."""
DemoMaker = Callable[[PopulationAgent, Tensor, Tensor], Others]
"""(frozen net, reset_state [B, P, S], reset_obs [B, P, D]) -> the previous generation as the others
(:class:`PolicyOthers`; Goal Sequence: ``gridenv.GridDemonstrator``, a body in the grid)."""


class PolicyOthers:
    """Frozen agents as the others: slot j of row b replays from ``reset_state[b, j]`` / ``reset_obs[b, j]``
    at every trial start of the learner, then observes the learner's action, trial flag and reward (paper
    code: the demonstrator's input is ``[one_hot(learner action), trial_done, reward, 0…]``), and samples.

    Args:
        net: one shared agent (members = 1, in-context) or one member per slot (members = P, in-weights).
        reset_state: [B, P, S] (S: the agent's ``state_size``).  reset_obs: [B, P, D].
    """

    def __init__(self, net: PopulationAgent, reset_state: Tensor, reset_obs: Tensor) -> None:
        if net.members not in (1, reset_state.shape[1]):
            raise ValueError(f"{net.members} networks for {reset_state.shape[1]} demonstrator slots")
        self.net, self.h0, self.o0 = net, reset_state, reset_obs
        self.count = reset_state.shape[1]
        self.h = reset_state.clone()
        self.last = torch.zeros(reset_state.shape[:2], dtype=torch.long, device=reset_state.device)

    @torch.no_grad()
    def _act(self, obs: Tensor, rows: Tensor, gen: torch.Generator) -> Tensor:
        """Advance the rows ``rows`` one step from ``obs`` [B, P, D]; other rows keep state and action."""
        b, p, d = obs.shape
        if self.net.members == 1:
            logits, _, h = self.net.step(obs.reshape(1, b * p, d), self.h.reshape(1, b * p, -1),
                                         torch.zeros(1, b * p, dtype=torch.bool, device=obs.device))
            logits, h = logits.view(b, p, -1), h.view(b, p, -1)
        else:
            logits, _, h = self.net.step(obs.transpose(0, 1), self.h.transpose(0, 1),
                                         torch.zeros(p, b, dtype=torch.bool, device=obs.device))
            logits, h = logits.transpose(0, 1), h.transpose(0, 1)
        action = torch.multinomial(torch.softmax(logits.reshape(b * p, -1), -1), 1, generator=gen).view(b, p)
        self.h = torch.where(rows[:, None, None], h, self.h)
        self.last = torch.where(rows[:, None], action, self.last)
        return self.last

    def reset(self, env: TrialEnv, rows: Tensor, gen: torch.Generator) -> Tensor:
        self.h = torch.where(rows[:, None, None], self.h0, self.h)
        return self._act(self.o0, rows, gen)

    def step(self, env: TrialEnv, action: Tensor, reward: Tensor, trial_done: Tensor,
             gen: torch.Generator) -> Tensor:
        b, p, a = env.batch, self.count, env.num_actions
        own = torch.cat([torch.nn.functional.one_hot(action, a).float(), trial_done.float()[:, None],
                         reward[:, None], torch.zeros(b, p * a + 1, device=env.device)], 1)
        obs = torch.where(trial_done[:, None, None], self.o0, own[:, None, :].expand(b, p, -1))
        self.h = torch.where(trial_done[:, None, None], self.h0, self.h)
        return self._act(obs, torch.ones(b, dtype=torch.bool, device=env.device), gen)


@dataclass
class Episode:
    """One episode of K trials per row.

    Args:
        scores: [R, K] trial scores.  tours: [R, K] tour lengths of completed trials (NaN if none / not TSP).
        reset_state: [R, S] recurrent state at the start of the final trial.  reset_obs: [R, D] the obs there.
    """

    scores: Tensor
    tours: Tensor
    reset_state: Tensor
    reset_obs: Tensor


@torch.no_grad()
def play_episode(net: PopulationAgent, env: TrialEnv, gen: torch.Generator,
                 follow_others: bool = False) -> Episode:
    """Run exactly one K-trial episode in every row (``net`` has one member). ``follow_others`` plays the
    last others' slot instead (the best noisy oracle: its score is "the oracle's accuracy")."""
    env.auto_reset = False
    rows, k = env.batch, env.num_trials
    obs, h = env.reset(gen), net.initial_state(rows, env.device)
    reset = torch.ones(1, rows, dtype=torch.bool, device=env.device)
    alive = torch.ones(rows, dtype=torch.bool, device=env.device)
    scores = torch.zeros(rows, k, device=env.device)
    tours = torch.full((rows, k), float("nan"), device=env.device)
    keep_h, keep_obs = h[0].clone(), obs.clone()
    for _ in range(k * env.trial_steps + 1):
        logits, _, h = net.step(obs[None], h, reset)
        action = torch.multinomial(torch.softmax(logits[0], -1), 1, generator=gen)[:, 0]
        if follow_others:
            action = env.others.last[:, -1]
        out = env.step(action, gen)
        scores.scatter_add_(1, out.trial.clamp(max=k - 1)[:, None], (out.score * alive)[:, None])
        if out.tour is not None:
            done_tour = alive & out.trial_done & out.tour.isfinite()
            tours.scatter_(1, out.trial.clamp(max=k - 1)[:, None],
                           torch.where(done_tour, out.tour, tours.gather(1, out.trial.clamp(max=k - 1)[:, None])[:, 0])[:, None])
        start_final = alive & out.trial_done & (out.trial == k - 2)
        keep_h = torch.where(start_final[:, None], h[0], keep_h)
        keep_obs = torch.where(start_final[:, None], out.obs, keep_obs)
        alive = alive & ~out.done
        obs, reset = out.obs, torch.zeros_like(reset)
        if not bool(alive.any()):
            break
    return Episode(scores, tours, keep_h, keep_obs)


@dataclass
class Generation:
    """One in-context generation over B tasks × P members, members sorted by final-trial score (best last).

    Args:
        scores: [B, P, K].  tours: [B, P, K].  reset_state: [B, P, S] (S: the agent's ``state_size``).  reset_obs: [B, P, D].
    """

    scores: Tensor
    tours: Tensor
    reset_state: Tensor
    reset_obs: Tensor

    def trial_means(self) -> list[float]:
        """Mean score per trial over tasks and members (the paper's curves)."""
        return self.scores.mean((0, 1)).tolist()

    def final_tour(self) -> float:
        """Mean tour length of the completed final trials (NaN if none)."""
        last = self.tours[..., -1]
        ok = last.isfinite()
        return float(last[ok].mean()) if bool(ok.any()) else float("nan")


def _sorted_generation(ep: Episode, tasks: int, population: int) -> Generation:
    def view(x: Tensor) -> Tensor:
        return x.view(tasks, population, *x.shape[1:])

    scores = view(ep.scores)
    order = scores[..., -1].argsort(dim=1, stable=True)                                 # [B, P] ascending

    def pick(x: Tensor) -> Tensor:
        return x.gather(1, order.view(tasks, population, *([1] * (x.dim() - 2))).expand_as(x))

    return Generation(pick(scores), pick(view(ep.tours)), pick(view(ep.reset_state)), pick(view(ep.reset_obs)))


def in_context_generations(net: PopulationAgent, make_env: EnvMaker, tasks: Tensor, population: int,
                           generations: int, first_others: Others, num_trials: int, gen: torch.Generator,
                           *, on_generation: Callable[[int, Generation], None] | None = None,
                           start: Generation | None = None, first_generation: int = 0,
                           demonstrators: DemoMaker = PolicyOthers) -> list[Generation]:
    """Alg. 2: ``generations`` generations of ``population`` agents on each of the B ``tasks`` (fixed across
    generations). Generation 0 plays beside ``first_others`` (random others, the code's evaluation; Goal
    Sequence: the noisy oracle); later ones beside the previous generation's best ``first_others.count``
    agents, built by ``demonstrators``. ``start``/``first_generation`` resume after a saved generation."""
    if num_trials < 2:
        raise ValueError("in-context accumulation needs at least 2 trials per episode")
    b = tasks.shape[0]
    fixed = tasks.repeat_interleave(population, 0)                                    # row = task·P + member
    # the environment shows ``count`` others: the best ``count`` members, ascending (a smaller population
    # repeats its lowest-ranked member first, so the best stays in the last slot as in training)
    slots = torch.arange(population - first_others.count, population).clamp(min=0).to(tasks.device)
    out, prev = [], start
    for g in range(first_generation, generations):
        others = first_others if prev is None else demonstrators(
            net, prev.reset_state[:, slots].repeat_interleave(population, 0),
            prev.reset_obs[:, slots].repeat_interleave(population, 0))
        env = make_env(b * population, others, fixed, num_trials)
        prev = _sorted_generation(play_episode(net, env, gen), b, population)
        out.append(prev)
        if on_generation is not None:
            on_generation(g, prev)
    return out


# ---------------------------------------------------------------------------------------------
# In-weights accumulation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InWeightsConfig:
    """Alg. 3 settings.

    Args:
        population: N_pop agents trained in parallel per generation (paper: 5).
        generations: number of generations.
        eval_episodes: episodes per member to rank the population (others hidden).
        resets: start each later generation from the previous best with its last two layers re-initialised
            (instead of from scratch).
    """

    population: int = 5
    generations: int = 8
    eval_episodes: int = 64
    resets: bool = False


@torch.no_grad()
def member_scores(net: PopulationAgent, make_env: EnvMaker, episodes: int, demos: Others,
                  fixed: Tensor | None, gen: torch.Generator) -> Tensor:
    """[M] mean final-trial score of each member over ``episodes`` episodes with the others hidden."""
    scores = []
    for m in range(net.members):
        env = make_env(episodes, demos, fixed, 1)
        env.vis_prob = 0.0
        scores.append(play_episode(net.member([m]), env, gen).scores[:, -1].mean())
    return torch.stack(scores)


def _demonstrators(prev: PopulationAgent, rows: int, obs_dim: int, device: torch.device) -> PolicyOthers:
    p = prev.members
    return PolicyOthers(prev, torch.zeros(rows, p, prev.state_size, device=device),
                        torch.zeros(rows, p, obs_dim, device=device))


def train_population(agent: AgentConfig, cfg: PPOConfig, iw: InWeightsConfig, make_env: EnvMaker,
                     prev: PopulationAgent, fixed: Tensor | None, seed: int,
                     init: PopulationAgent | None = None,
                     on_update: Callable[[int, dict[str, float]], None] | None = None
                     ) -> tuple[PopulationAgent, list[dict[str, float]]]:
    """Train one generation (``iw.population`` members) with ``prev`` as the others (visible with a probability
    annealed 1 → 0 when ``cfg.anneal_vis``, else hidden: K = 1 episodes never show them)."""
    device = prev.device
    net = init if init is not None else make_agent(agent, iw.population, seed=seed).to(device)
    rows = iw.population * local_envs(cfg)            # this rank's share of the envs (all for 1 process)
    env = make_env(rows, _demonstrators(prev, rows, agent.obs_dim, device),
                   None if fixed is None else fixed.expand(rows, *fixed.shape[1:]), 1)
    history = ppo_train(net, env, cfg, seed, on_update=on_update)
    return net, history


def next_initial(best: PopulationAgent, iw: InWeightsConfig, seed: int) -> PopulationAgent | None:
    """The next generation's start: None (from scratch) or ``population`` copies of the best with reset heads."""
    if not iw.resets:
        return None
    init = best.member([0] * iw.population)
    init.reset_heads(seed)
    return init


def random_population(agent: AgentConfig, members: int, seed: int, device: torch.device | str) -> PopulationAgent:
    """Generation −1 for in-weights runs: untrained agents (the code's random-initialised others)."""
    return make_agent(agent, members, seed=seed).to(device)


def silent(count: int) -> SilentOthers:
    return SilentOthers(count)
