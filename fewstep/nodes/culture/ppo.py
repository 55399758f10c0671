"""Recurrent PPO over a population (PureJaxRL's ``make_train`` as the paper code runs it, in torch).

One update = a rollout of ``num_steps`` steps in ``num_envs`` episodes per member, GAE, then ``epochs`` passes
over ``minibatches`` groups of whole env columns, each replayed through the recurrent core from the rollout's
first state (truncated BPTT over the rollout, resets where episodes start).

Data-parallel under ``fewstep run --nproc N`` (torchrun): ``num_envs`` is the global count; each rank plays
``num_envs / N`` of them (:func:`local_envs`) from its own seed, a minibatch is the same share of columns on every
rank, advantages are normalised over the global minibatch, the gradients are averaged over ranks before the
per-member clip, so every rank takes the same optimizer step and keeps the same weights. The metrics are the
global ones (episodes of all ranks); checkpoints and progress come from rank 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fewstep.nodes.core.train.distributed import (
    World,
    average_gradients,
    broadcast_module,
    current_world,
    gather_objects,
    join,
    local_batch_size,
    mean_std_over_ranks,
)
from fewstep.nodes.culture.agent import PopulationAgent, clip_per_member
from fewstep.nodes.culture.envs import TrialEnv


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (defaults: the paper code's MemSeq in-context run).

    Args:
        lr: Adam learning rate (eps 1e-5), linearly annealed to 0 when ``anneal_lr``.
        num_envs: parallel episodes per member.
        num_steps: rollout length T.
        total_steps: environment steps per member over the whole run (updates = total / (envs · T)).
        epochs / minibatches: passes over the rollout and column groups per pass.
        gamma / gae_lambda: discount and GAE λ.
        clip: PPO ratio clip ε (also the value clip).
        ent_coef / vf_coef: entropy bonus and value-loss weights.
        max_grad_norm: per-member global gradient norm clip.
        anneal_vis: anneal the others' visibility 1 → 0 over training (in-weights accumulation).
    """

    lr: float = 2.5e-4
    num_envs: int = 16
    num_steps: int = 128
    total_steps: int = 8_000_000
    epochs: int = 2
    minibatches: int = 8
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    ent_coef: float = 0.03
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    anneal_lr: bool = True
    anneal_vis: bool = False

    def __post_init__(self) -> None:
        if self.num_envs % self.minibatches:
            raise ValueError(f"num_envs ({self.num_envs}) must be a multiple of minibatches ({self.minibatches})")
        if self.total_steps < self.num_envs * self.num_steps:
            raise ValueError(f"total_steps ({self.total_steps}) is less than one rollout "
                             f"({self.num_envs} envs x {self.num_steps} steps)")

    @property
    def num_updates(self) -> int:
        return self.total_steps // (self.num_envs * self.num_steps)


def local_envs(cfg: PPOConfig, world: World | None = None) -> int:
    """This rank's share of ``cfg.num_envs`` (all of them for 1 process); each rank's share has to split into
    ``cfg.minibatches`` column groups, so that a global minibatch is the same share of every rank."""
    world = world or current_world()
    share = local_batch_size(cfg.num_envs, world)
    if share % cfg.minibatches:
        raise ValueError(f"num_envs {cfg.num_envs} over {world.size} processes leaves {share} envs per process, "
                         f"not a multiple of minibatches ({cfg.minibatches}): choose num_envs as a multiple of "
                         f"{world.size * cfg.minibatches}")
    return share


def gae(rewards: Tensor, values: Tensor, dones: Tensor, last_value: Tensor, gamma: float,
        lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 11–16), time on axis 0.

        δ_t = r_t + γ·V_{t+1}·(1 − d_t) − V_t
        A_t = δ_t + γλ·(1 − d_t)·A_{t+1},  A_T = 0,  V_T = ``last_value``

    where d_t = 1 when the episode ended with step t. Returns (advantages, value targets A + V)."""
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    next_value = last_value
    for t in range(rewards.shape[0] - 1, -1, -1):
        keep = 1.0 - dones[t].float()
        delta = rewards[t] + gamma * next_value * keep - values[t]
        running = delta + gamma * lam * keep * running
        adv[t] = running
        next_value = values[t]
    return adv, adv + values


@dataclass(frozen=True)
class PPOLoss:
    """Clipped PPO objective with a clipped value loss and an entropy bonus (Schulman et al. 2017, eq. 7, 9),
    as the paper code computes it, per member m (axis 0; every other axis is averaged)::

        r = exp(log π(a|o) − log π_old(a|o)),   Â = (A − mean A) / (std A + 1e-8)
        L_clip = −E[ min(r·Â, clip(r, 1 − ε, 1 + ε)·Â) ]
        L_V    = ½·E[ max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²) ]
        L      = L_clip + c_V·L_V − c_H·E[H(π(·|o))]

    Args:
        clip: ε.  vf_coef: c_V.  ent_coef: c_H.
    """

    clip: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.01

    def __call__(self, logits: Tensor, value: Tensor, actions: Tensor, old_logp: Tensor, old_value: Tensor,
                 advantages: Tensor, targets: Tensor, world: World | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """logits [M, ..., A]; the rest [M, ...]. Returns (loss [M], parts [M] each). ``world``: a data-parallel
        run's ranks, over whose minibatches together mean A and std A are taken (the global minibatch)."""
        dims = tuple(range(1, advantages.dim()))
        logp_all = torch.log_softmax(logits, -1)
        logp = logp_all.gather(-1, actions[..., None])[..., 0]
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean(dims)
        v_clipped = old_value + (value - old_value).clamp(-self.clip, self.clip)
        value_loss = 0.5 * torch.maximum((value - targets) ** 2, (v_clipped - targets) ** 2).mean(dims)
        mean, std = mean_std_over_ranks(advantages, dims, world or World())
        adv = (advantages - mean) / (std + 1e-8)
        ratio = (logp - old_logp).exp()
        actor = -torch.minimum(ratio * adv, ratio.clamp(1 - self.clip, 1 + self.clip) * adv).mean(dims)
        loss = actor + self.vf_coef * value_loss - self.ent_coef * entropy
        return loss, {"actor": actor, "value": value_loss, "entropy": entropy}


@dataclass
class Rollout:
    """T steps of M members × N envs: obs [T,M,N,D]; resets/actions/logp/values/rewards/dones [T,M,N];
    h0 [M,N,S] the recurrent state before step 0."""

    obs: Tensor
    resets: Tensor
    actions: Tensor
    logp: Tensor
    values: Tensor
    rewards: Tensor
    dones: Tensor
    h0: Tensor


@dataclass
class Runner:
    """The live state between updates: env, its last obs, hidden state, reset flags and score tallies."""

    env: TrialEnv
    obs: Tensor
    h: Tensor
    reset: Tensor
    episode_return: Tensor
    trial_score: Tensor
    finished: list[tuple[float, list[float]]] = field(default_factory=list)


def start(net: PopulationAgent, env: TrialEnv, gen: torch.Generator) -> Runner:
    """Reset ``env`` (M·N rows, member-major) and a zero hidden state."""
    m = net.members
    n = env.batch // m
    if n * m != env.batch:
        raise ValueError(f"the env batch ({env.batch}) is not a multiple of the population ({m})")
    obs = env.reset(gen)
    zeros = torch.zeros(env.batch, device=env.device)
    return Runner(env, obs, net.initial_state(n, env.device), torch.ones(m, n, dtype=torch.bool, device=env.device),
                  zeros.clone(), torch.zeros(env.batch, env.num_trials, device=env.device))


def _tally(runner: Runner, step_reward: Tensor, score: Tensor, trial: Tensor, done: Tensor) -> None:
    """Accumulate returns and per-trial scores; move finished episodes to ``runner.finished``."""
    runner.episode_return += step_reward
    runner.trial_score.scatter_add_(1, trial.clamp(max=runner.env.num_trials - 1)[:, None], score[:, None])
    if bool(done.any()):
        rows = done.nonzero()[:, 0]
        for ret, trials in zip(runner.episode_return[rows].tolist(), runner.trial_score[rows].tolist(), strict=True):
            runner.finished.append((ret, trials))
        runner.episode_return[rows] = 0.0
        runner.trial_score[rows] = 0.0


@torch.no_grad()
def collect(net: PopulationAgent, runner: Runner, steps: int, gen: torch.Generator) -> Rollout:
    """Play ``steps`` steps with actions sampled from the policy."""
    m, n = runner.h.shape[:2]
    h0, keep = runner.h.clone(), []
    for _ in range(steps):
        obs = runner.obs.view(m, n, -1)
        logits, value, runner.h = net.step(obs, runner.h, runner.reset)
        action = torch.multinomial(torch.softmax(logits.view(m * n, -1), -1), 1, generator=gen)[:, 0]
        logp = torch.log_softmax(logits, -1).gather(-1, action.view(m, n, 1))[..., 0]
        out = runner.env.step(action, gen)
        keep.append((obs, runner.reset, action.view(m, n), logp, value, out.reward.view(m, n), out.done.view(m, n)))
        _tally(runner, out.reward, out.score, out.trial, out.done)
        runner.obs, runner.reset = out.obs, out.done.view(m, n)
    cols = [torch.stack(c) for c in zip(*keep, strict=True)]
    return Rollout(*cols, h0=h0)


def replay(net: PopulationAgent, roll: Rollout, cols: Tensor) -> tuple[Tensor, Tensor]:
    """Re-run the policy over the rollout for env columns ``cols``: (logits [T,M,n,A], values [T,M,n]); a loop of
    GRU steps, or one parallel scan per S5 block."""
    logits, values, _ = net.sequence(roll.obs[:, :, cols], roll.h0[:, cols], roll.resets[:, :, cols])
    return logits, values


def update(net: PopulationAgent, optimizer: torch.optim.Optimizer, roll: Rollout, last_value: Tensor,
           cfg: PPOConfig, loss_fn: PPOLoss, gen: torch.Generator) -> dict[str, float]:
    """GAE then ``epochs`` × ``minibatches`` clipped-PPO steps; returns the mean loss and its parts (this rank's;
    data-parallel: gradients averaged over ranks, advantages normalised over the global minibatch)."""
    world = current_world()
    adv, targets = gae(roll.rewards, roll.values, roll.dones, last_value, cfg.gamma, cfg.gae_lambda)
    n = roll.obs.shape[2]
    stats: dict[str, float] = {}
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen, device=gen.device).to(roll.obs.device)
        for cols in perm.chunk(cfg.minibatches):
            logits, values = replay(net, roll, cols)
            batch = [x[:, :, cols].transpose(0, 1) for x in (roll.actions, roll.logp, roll.values, adv, targets)]
            loss, parts = loss_fn(logits.transpose(0, 1), values.transpose(0, 1), *batch, world=world)  # [M,T,n]
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            average_gradients(net.parameters(), world)     # the global minibatch's gradient, then the clip
            clip_per_member(net, cfg.max_grad_norm)
            optimizer.step()
            for key, value in (parts | {"loss": loss}).items():
                stats[key] = stats.get(key, 0.0) + float(value.detach().mean()) / (cfg.epochs * cfg.minibatches)
    return stats


def make_optimizer(net: PopulationAgent, cfg: PPOConfig) -> torch.optim.Adam:
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=1e-5)


UpdateHook = Callable[[int, dict[str, float]], None]


def global_metrics(metrics: dict[str, float], world: World) -> dict[str, float]:
    """One update's metrics over all ranks: losses averaged, ``episodes`` summed, the episode means (``return``,
    ``trial_<i>``) weighted by each rank's episodes; the input itself for 1 process."""
    if not world.distributed:
        return metrics
    every: list[dict[str, float]] = gather_objects(metrics, world)
    episodes = sum(m.get("episodes", 0.0) for m in every)
    out = {"episodes": episodes}
    for key in every[0]:
        if key in ("episodes", "return") or key.startswith("trial_"):
            continue
        out[key] = sum(m[key] for m in every) / len(every)
    for key in {k for m in every for k in m if k == "return" or k.startswith("trial_")}:
        out[key] = sum(m.get(key, 0.0) * m.get("episodes", 0.0) for m in every) / episodes
    return out


def summarise(runner: Runner) -> dict[str, float]:
    """Mean return and per-trial score of the episodes finished since the last call (then cleared)."""
    done = runner.finished
    runner.finished = []
    if not done:
        return {"episodes": 0.0}
    k = len(done[0][1])
    out = {"episodes": float(len(done)), "return": sum(r for r, _ in done) / len(done)}
    for i in range(k):
        out[f"trial_{i}"] = sum(t[i] for _, t in done) / len(done)
    return out


def train(net: PopulationAgent, env: TrialEnv, cfg: PPOConfig, seed: int, *,
          optimizer: torch.optim.Optimizer | None = None, first_update: int = 0,
          on_update: UpdateHook | None = None) -> list[dict[str, float]]:
    """PPO for ``cfg.num_updates`` updates (from ``first_update`` on a resume). Update u draws from a generator
    seeded by (seed, u). ``on_update(u, metrics)`` runs after each update on every rank (progress, checkpoints -
    rank 0's job; it may raise to stop). Returns one metrics dict per update run.

    Data-parallel (torchrun): ``env`` holds this rank's :func:`local_envs` per member; rank r draws from
    ``step_generator(seed, u, rank=r)`` (rank 0 draws what 1 process draws), rank 0's weights start every rank."""
    from fewstep.nodes.core.train.loop import step_generator

    world = join(str(env.device))
    local_envs(cfg, world)                              # a clear error when num_envs does not split
    broadcast_module(net, world)
    optimizer = optimizer or make_optimizer(net, cfg)
    loss_fn = PPOLoss(cfg.clip, cfg.vf_coef, cfg.ent_coef)
    runner = start(net, env, step_generator(seed, -1, env.device, rank=world.rank))
    history = []
    for u in range(first_update, cfg.num_updates):
        gen = step_generator(seed, u, env.device, rank=world.rank)
        frac = 1.0 - u / cfg.num_updates
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * (frac if cfg.anneal_lr else 1.0)
        if cfg.anneal_vis:
            env.vis_prob = frac
        roll = collect(net, runner, cfg.num_steps, gen)
        with torch.no_grad():
            m, n = runner.h.shape[:2]
            _, last_value, _ = net.step(runner.obs.view(m, n, -1), runner.h, runner.reset)
        metrics = global_metrics(update(net, optimizer, roll, last_value, cfg, loss_fn, gen) | summarise(runner),
                                 world)
        metrics["update"] = float(u)
        history.append(metrics)
        if on_update is not None:
            on_update(u, metrics)
    return history
