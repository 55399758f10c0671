"""The experiments of the paper as functions of plain configs: environment configs (the ENV link type), trained
policies (POLICY), in-context and in-weights accumulation with per-generation checkpoints and resume, and the
baselines (single-lifetime RL², the noisy oracle, a single agent trained G× longer)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from fewstep.nodes.core.train.distributed import current_world
from fewstep.nodes.core.train.loop import Checkpointer, step_generator
from fewstep.nodes.culture.accumulate import (
    DemoMaker,
    Generation,
    InWeightsConfig,
    PolicyOthers,
    in_context_generations,
    member_scores,
    next_initial,
    play_episode,
    random_population,
    train_population,
)
from fewstep.nodes.culture.agent import AgentConfig, PopulationAgent, make_agent
from fewstep.nodes.culture.envs import (
    MemoryOracles,
    MemorySequence,
    Others,
    SilentOthers,
    TravellingSalesman,
    TrialEnv,
    TSPOracles,
    memory_tasks,
    tsp_tasks,
)
from fewstep.nodes.culture.gridenv import (
    FORWARD,
    START,
    GoalSequence,
    GridDemonstrator,
    GridOracle,
    goal_tasks,
)
from fewstep.nodes.culture.ppo import PPOConfig, local_envs, make_optimizer
from fewstep.nodes.culture.ppo import train as ppo_train

ENV_NAMES = ("memory_sequence", "tsp", "goal_sequence")
Hook = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class EnvConfig:
    """An environment family (the ENV link type): what ``make`` builds for a batch.

    Args:
        name: ``memory_sequence`` (digits), ``tsp`` (cities) or ``goal_sequence`` (a grid with 3 goals).
        size: digit types (MemSeq, paper 3 in-context / 10 in-weights), cities (TSP, code 6) or the grid's side
            (Goal Sequence, paper 7).
        length: trial length (MemSeq digits, paper 24; Goal Sequence steps, code 50); unused by TSP.
        num_trials: K trials per episode (paper 4 MemSeq, code 8 TSP; 1 = in-weights).
        num_others: P others (oracles / previous generation; paper code 3, in-weights 5).
        oracle_strength: MemSeq: oracle accuracy p = 1 − 1/U(1, 1 + s) (code ``other_max_len``, 0.5);
            TSP: oracle temperature τ ~ U(0, s) (code ``temp_scale``, 0.5); Goal Sequence: the oracle takes a
            uniform action with probability ε = 1/(1 + s) (one oracle body, whatever ``num_others``).
        task_seed: seed of the fixed evaluation tasks (and of the one in-weights task).
        penalty: Goal Sequence only: entering a wrong goal pays −penalty (the code's ``penalty`` argument). At
            1 the demo-size learner learns to avoid goals altogether (return 0); at 0 it learns to hit them.
    """

    name: str = "memory_sequence"
    size: int = 3
    length: int = 24
    num_trials: int = 4
    num_others: int = 3
    oracle_strength: float = 0.5
    task_seed: int = 420
    penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in ENV_NAMES:
            raise ValueError(f"unknown environment {self.name!r}; choose one of {ENV_NAMES}")
        if self.size < 2 or self.length < 1 or self.num_trials < 1 or self.num_others < 1:
            raise ValueError("size >= 2, length >= 1, num_trials >= 1 and num_others >= 1 are required")
        if self.name == "goal_sequence" and self.size < 4:
            raise ValueError(f"a Goal Sequence grid needs a side >= 4 (the start cell is {START}); got {self.size}")

    def make(self, batch: int, others: Others, fixed: Tensor | None, num_trials: int,
             device: torch.device | str) -> TrialEnv:
        if self.name == "memory_sequence":
            return MemorySequence(batch, self.size, self.length, num_trials, others, fixed_tasks=fixed, device=device)
        if self.name == "goal_sequence":
            return GoalSequence(batch, num_trials, others, size=self.size, trial_length=self.length,
                                penalty=self.penalty, fixed_tasks=fixed, device=device)
        return TravellingSalesman(batch, self.size, num_trials, others, fixed_tasks=fixed, device=device)

    def maker(self, device: torch.device | str) -> Callable[[int, Others, Tensor | None, int], TrialEnv]:
        return lambda batch, others, fixed, k: self.make(batch, others, fixed, k, device)

    def oracles(self) -> Others:
        """The noisy oracles of training (Alg. 1)."""
        if self.name == "memory_sequence":
            return MemoryOracles(self.num_others, self.oracle_strength)
        if self.name == "goal_sequence":
            return GridOracle(1.0 / (1.0 + self.oracle_strength))
        return TSPOracles(self.num_others, self.oracle_strength)

    def random_others(self) -> Others:
        """Generation 0's others at evaluation (code: MemSeq oracles of accuracy 0, TSP temperature 10)."""
        if self.name == "memory_sequence":
            return MemoryOracles(self.num_others, 0.0, accuracy=0.0)
        if self.name == "goal_sequence":
            return GridOracle(1.0)
        return TSPOracles(self.num_others, 10.0, temperature=10.0)

    def first_others(self) -> Others:
        """Generation 0's others in the generational loop: the random others of the code's evaluation
        (Memory Sequence, TSP); Goal Sequence: the noisy oracle of training, a body to learn from."""
        return self.oracles() if self.name == "goal_sequence" else self.random_others()

    def demonstrators(self) -> DemoMaker:
        """How a frozen previous generation becomes the others: replayed actions (:class:`PolicyOthers`), or
        on Goal Sequence a body of its own in the grid (:class:`GridDemonstrator`)."""
        return GridDemonstrator if self.name == "goal_sequence" else PolicyOthers

    def tasks(self, count: int, device: torch.device | str) -> Tensor:
        """``count`` fixed tasks drawn from ``task_seed`` (the same on every device)."""
        gen = torch.Generator().manual_seed(self.task_seed)
        if self.name == "memory_sequence":
            return memory_tasks(count, self.size, self.length, gen).to(device)
        if self.name == "goal_sequence":
            return goal_tasks(count, self.size, 3, gen).to(device)
        return tsp_tasks(count, self.size, gen).to(device)

    def agent(self, hidden: int, embed: int, core: str = "gru", ssm_layers: int = 2) -> AgentConfig:
        """The actor-critic shape for this environment (``core``: ``gru`` or ``s5``)."""
        probe = self.make(1, self.oracles(), None, 1, "cpu")
        return AgentConfig(probe.obs_dim, probe.num_actions, hidden, embed, core=core, ssm_layers=ssm_layers)


@dataclass
class Policy:
    """A trained agent (the POLICY link type): the network, the environment it was trained on, how, and
    its training curve (one metrics dict per PPO update)."""

    net: PopulationAgent
    env: EnvConfig
    social: bool
    history: list[dict[str, float]] = field(default_factory=list)


def _make_train_env(env: EnvConfig, ppo: PPOConfig, social: bool, num_trials: int, members: int,
                    device: torch.device | str) -> TrialEnv:
    others = env.oracles() if social else SilentOthers(env.num_others)
    made = env.make(local_envs(ppo) * members, others, None, num_trials, device)   # this rank's share
    if not social:
        made.vis_prob = 0.0
    return made


def train_in_context(env: EnvConfig, ppo: PPOConfig, hidden: int, embed: int, seed: int, *, social: bool = True,
                     num_trials: int | None = None, folder: Path | None = None, checkpoint_every: int = 0,
                     device: torch.device | str = "cpu", on_update: Hook | None = None, core: str = "gru",
                     ssm_layers: int = 2) -> Policy:
    """Alg. 1 (``social``: noisy oracles visible with p = 1 − k/(K−1)) or the RL² baseline (others hidden),
    on ``num_trials``-trial episodes (default ``env.num_trials``), with a GRU or S5 (``core``) agent. With
    ``folder``, checkpoints every ``checkpoint_every`` updates (and at the end); a re-run resumes from the
    latest one."""
    k = num_trials or env.num_trials
    net = make_agent(env.agent(hidden, embed, core, ssm_layers), seed=seed).to(device)
    optimizer = make_optimizer(net, ppo)
    saver = Checkpointer(folder, every=checkpoint_every, keep=2) if folder is not None else None
    first, history = 0, []
    if saver is not None and saver.latest() is not None:
        ckpt = Checkpointer.load(saver.latest())
        net.load_state_dict(ckpt.prefixed("net"))
        optimizer.load_state_dict(_optimizer_state(optimizer, ckpt.prefixed("optim"), ckpt.meta))
        first, history = ckpt.step + 1, list(ckpt.meta["history"])

    def hook(u: int, metrics: dict[str, float]) -> None:
        history.append(metrics)
        last = u == ppo.num_updates - 1
        due = last or (checkpoint_every and (u + 1) % checkpoint_every == 0)
        if saver is not None and due and current_world().is_main:          # rank 0 writes for the run
            _save(saver, u, net, optimizer, {"history": history})
        if on_update is not None:
            on_update(u, metrics)

    if first < ppo.num_updates:
        ppo_train(net, _make_train_env(env, ppo, social, k, 1, device), ppo, seed, optimizer=optimizer,
                  first_update=first, on_update=hook)
    return Policy(net, env, social, history)


def _save(saver: Checkpointer, step: int, net: PopulationAgent, optimizer: torch.optim.Optimizer,
          meta: dict[str, object]) -> None:
    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().reshape(-1) \
                if key == "step" else value
    saver.save(step, tensors, meta | {"param_groups": opt["param_groups"]})


def _optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor],
                     meta: dict[str, object]) -> dict[str, object]:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value.reshape(()) if name == "step" else value
    return {"state": state, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------------------------------------
# In-context generations (with per-generation checkpoints)
# ---------------------------------------------------------------------------------------------


def _generation_tensors(g: Generation) -> dict[str, Tensor]:
    return {"scores": g.scores, "tours": g.tours, "reset_state": g.reset_state, "reset_obs": g.reset_obs}


def _load_generations(saver: Checkpointer | None, device: torch.device | str) -> list[Generation]:
    if saver is None:
        return []
    loaded = [Checkpointer.load(p) for p in saver.paths()]
    gens = [Generation(**{k: v.to(device) for k, v in c.tensors.items()}) for c in loaded]
    return gens[: next((i for i, c in enumerate(loaded) if c.step != i), len(loaded))]


def run_in_context(policy: Policy, generations: int, tasks: int, population: int, seed: int, *,
                   folder: Path | None = None, on_generation: Callable[[int, Generation], None] | None = None
                   ) -> list[Generation]:
    """Alg. 2 over ``tasks`` fixed tasks; with ``folder`` each generation is saved and a re-run resumes."""
    device = policy.net.device
    saver = Checkpointer(folder, every=1, keep=10_000) if folder is not None else None
    done = _load_generations(saver, device)[:generations]

    def hook(g: int, gen_: Generation) -> None:
        if saver is not None and current_world().is_main:
            saver.save(g, _generation_tensors(gen_), {"trial_means": gen_.trial_means()})
        if on_generation is not None:
            on_generation(g, gen_)

    env = policy.env
    more = in_context_generations(policy.net, env.maker(device), env.tasks(tasks, device), population,
                                  generations, env.first_others(), env.num_trials,
                                  step_generator(seed, len(done), device), on_generation=hook,
                                  start=done[-1] if done else None, first_generation=len(done),
                                  demonstrators=env.demonstrators())
    return done + more


@torch.no_grad()
def trial_curve(policy: Policy, num_trials: int, tasks: int, seed: int, *, follow_oracle: bool = False) -> list[float]:
    """Mean score per trial of ``policy`` alone (others hidden) over ``num_trials``-trial episodes on the fixed
    tasks — the single-lifetime RL² curve. ``follow_oracle``: play the best noisy oracle's action instead,
    with the training oracles (its mean per-trial score is the oracle's accuracy in score units; Goal
    Sequence: the oracle body's own score, see :func:`grid_oracle_curve`)."""
    device = policy.net.device
    env_cfg = policy.env
    if follow_oracle and env_cfg.name == "goal_sequence":
        return grid_oracle_curve(env_cfg, num_trials, tasks, seed, device)
    others = env_cfg.oracles() if follow_oracle else SilentOthers(env_cfg.num_others)
    env = env_cfg.make(tasks, others, env_cfg.tasks(tasks, device), num_trials, device)
    env.vis_prob = 0.0
    return play_episode(policy.net, env, step_generator(seed, 0, device), follow_others=follow_oracle
                        ).scores.mean(0).tolist()


@torch.no_grad()
def grid_oracle_curve(env_cfg: EnvConfig, num_trials: int, tasks: int, seed: int,
                      device: torch.device | str) -> list[float]:
    """Goal Sequence's noisy oracle scored as a player: the mean number of goals its body enters in order per
    trial, on the fixed tasks (it restarts on a random free cell each trial and moves once per learner step,
    one move fewer in the first trial). The learner's actions do not affect it."""
    oracle = env_cfg.oracles()
    assert isinstance(oracle, GridOracle)
    env = env_cfg.make(tasks, oracle, env_cfg.tasks(tasks, device), num_trials, device)
    env.auto_reset = False
    gen = step_generator(seed, 0, device)
    env.reset(gen)
    scores = torch.zeros(tasks, num_trials, device=env.device)
    learner = torch.full((tasks,), FORWARD, device=env.device)     # any action: the oracle ignores it
    for _ in range(num_trials * env.trial_steps):
        hits = oracle.progress.clone()                       # goals in order so far this trial
        out = env.step(learner, gen)
        scores.scatter_(1, out.trial[:, None], torch.where(out.trial_done, hits.float(),
                                                             scores.gather(1, out.trial[:, None])[:, 0])[:, None])
    return scores.mean(0).tolist()


# ---------------------------------------------------------------------------------------------
# In-weights generations
# ---------------------------------------------------------------------------------------------


@dataclass
class InWeightsResult:
    """Per generation: every member's final score (ascending), the best member, the training curves."""

    scores: list[list[float]]
    best: PopulationAgent
    curves: list[list[float]]

    def best_scores(self) -> list[float]:
        return [max(s) for s in self.scores]


def run_in_weights(env: EnvConfig, ppo: PPOConfig, iw: InWeightsConfig, hidden: int, embed: int, seed: int, *,
                   folder: Path | None = None, device: torch.device | str = "cpu", on_update: Hook | None = None,
                   social: bool = True, core: str = "gru", ssm_layers: int = 2) -> InWeightsResult:
    """Alg. 3 on the single fixed task of ``env`` (``num_trials`` is forced to 1), GRU or S5 (``core``) agents.
    ``social=False`` is the single-lifetime baseline (others hidden all along; run with G× the steps and one
    generation)."""
    agent = env.agent(hidden, embed, core, ssm_layers)
    fixed = env.tasks(1, device)
    maker = env.maker(device)
    saver = Checkpointer(folder, every=1, keep=10_000) if folder is not None else None
    prev = random_population(agent, env.num_others, seed + 10_007, device)
    scores, curves, init = [], [], None
    for g in range(iw.generations):
        ckpt = Checkpointer.load(saver.paths()[g]) if saver is not None and len(saver.paths()) > g else None
        if ckpt is not None:
            net = make_agent(agent, iw.population).to(device)
            net.load_state_dict({k: v.to(device) for k, v in ckpt.prefixed("net").items()})
            member, curve = ckpt.meta["scores"], ckpt.meta["curve"]
        else:
            ppo_g = replace(ppo, anneal_vis=social)
            net, history = train_population(agent, ppo_g, iw, maker, prev, fixed, seed + 1000 * g, init, on_update)
            demos = SilentOthers(env.num_others)
            ranks = member_scores(net, maker, iw.eval_episodes, demos, fixed.expand(iw.eval_episodes, *fixed.shape[1:]),
                                  step_generator(seed, 10_000 + g, device))
            order = ranks.argsort(dim=0, stable=True)
            net, member = net.member(order.tolist()), ranks[order].tolist()
            curve = [h.get("trial_0", math.nan) for h in history]
            if saver is not None and current_world().is_main:
                saver.save(g, {f"net.{k}": v for k, v in net.state_dict().items()}, {"scores": member, "curve": curve})
        scores.append(member)
        curves.append(curve)
        best = net.member([net.members - 1])
        prev = net.member(list(range(net.members - env.num_others, net.members))) \
            if net.members >= env.num_others else net.member([net.members - 1] * env.num_others)
        init = next_initial(best, iw, seed + 77 * g)
    return InWeightsResult(scores, best, curves)


def config_fields(env: EnvConfig, ppo: PPOConfig | None, **more: object) -> dict[str, object]:
    """JSON-able description of a run (its fingerprint names the run folder). ``penalty`` appears only where it
    differs from the default 1, so that run folders named before it existed still resume."""
    described = asdict(env)
    if env.penalty == 1.0:
        del described["penalty"]
    return {"env": described, "ppo": None if ppo is None else asdict(ppo)} | more
