"""The training jobs behind ``fewstep bench culture`` (each one process on the GPU driver, serial on a CPU).

Jobs write into one results folder:
    ``policy_<name>.safetensors`` + ``train_<name>.json``  the in-context learners (``ic`` with oracles,
                                   ``rl2`` / ``rl2long`` without, ``sweep_<s>`` per oracle strength, ``tsp``;
                                   Goal Sequence: ``goal`` with its oracle, ``goal_rl2`` / ``goal_rl2long``);
    ``in_weights.json``            in-weights generations and the single-lifetime baseline.
A time budget (``seconds``) sets each training's update count from a measured update time (2 probe
updates of a throw-away agent), so the annealed learning rate still reaches 0 at the end.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from safetensors.torch import load_file, save_file

from fewstep.nodes.culture.accumulate import InWeightsConfig
from fewstep.nodes.culture.agent import AgentConfig, make_agent
from fewstep.nodes.culture.ppo import PPOConfig
from fewstep.nodes.culture.runs import EnvConfig, Policy, run_in_weights, train_in_context

Core = dict[str, str | int]
"""``core`` and ``ssm_layers`` keywords of the trainers."""
GOAL_JOBS = {"goal": "ic", "goal_rl2": "rl2", "goal_rl2long": "rl2long"}
"""The Goal Sequence jobs and the Memory Sequence job each mirrors."""


@dataclass(frozen=True)
class Preset:
    """One scale of the whole benchmark.

    Args:
        memseq: the in-context Memory Sequence (paper: 3 types, length 24, K = 4, 3 oracles).
        tsp: the TSP environment (code: 6 cities, K = 8, temperature scale 0.5).
        memseq_iw: the in-weights Memory Sequence (paper: 10 types, length 24, one fixed sequence).
        ppo / ppo_tsp / ppo_iw: PPO of each (total_steps is replaced when a time budget is given).
        hidden / embed: network widths (GRU width, or the S5 model width with state size = hidden).
        ssm_layers: S5 blocks when the benchmark runs with ``--core s5`` (the S5 RL code: 4).
        generations: G (paper 8, in-weights 8).  tasks / population: evaluation size.
        sweep: oracle strengths s (accuracy p ≤ 1 − 1/(1+s)) of the sweep.
        iw: in-weights settings.  baseline_factor: single-lifetime steps / one generation's.
        seconds: training time budget per job (None = the PPO configs' total_steps).
        goal / ppo_goal: the in-context Goal Sequence (paper: 7×7 grid, 3 goals; code: 50-step trials) and
            its PPO (the ``goal*`` jobs: learner with the oracle body, RL² on K- and G·K-trial episodes).
    """

    memseq: EnvConfig
    tsp: EnvConfig
    memseq_iw: EnvConfig
    ppo: PPOConfig
    ppo_tsp: PPOConfig
    ppo_iw: PPOConfig
    hidden: int
    embed: int
    ssm_layers: int
    generations: int
    tasks: int
    population: int
    sweep: tuple[float, ...]
    iw: InWeightsConfig
    baseline_factor: int = 5
    seconds: dict[str, float] = field(default_factory=dict)
    # a 5×5 grid, 20-step trials, K = 4, oracle ε = 1/(1+2) (it enters ~2 goals in order per trial), no penalty
    # for a wrong goal: at −1 the demo-size learner learnt to avoid every goal (measured: 0.00–0.03 goals per
    # trial after 60–120 updates), at −0.5 it stayed at chance (~0.2), at 0 it reached ~1 in 60 updates
    goal: EnvConfig = EnvConfig("goal_sequence", 5, 20, 4, 1, 2.0, penalty=0.0)
    ppo_goal: PPOConfig = PPOConfig(lr=1e-3, num_envs=32, num_steps=64, total_steps=32 * 64 * 100, epochs=2,
                                    minibatches=4)


DEMO = Preset(
    memseq=EnvConfig("memory_sequence", 3, 8, 4, 3, 0.5),
    tsp=EnvConfig("tsp", 5, 1, 4, 3, 0.5),
    memseq_iw=EnvConfig("memory_sequence", 4, 8, 1, 3, 0.0),
    ppo=PPOConfig(lr=1e-3, num_envs=32, num_steps=64, total_steps=32 * 64 * 40, epochs=2, minibatches=4),
    ppo_tsp=PPOConfig(lr=1e-3, num_envs=32, num_steps=64, total_steps=32 * 64 * 40, epochs=2, minibatches=4,
                      ent_coef=0.05),
    ppo_iw=PPOConfig(lr=2.5e-3, num_envs=8, num_steps=32, total_steps=8 * 32 * 12, epochs=2, minibatches=2,
                     ent_coef=0.01, anneal_lr=False),
    hidden=64, embed=64, ssm_layers=2, generations=4, tasks=64, population=3, sweep=(0.05, 0.5, 4.0),
    iw=InWeightsConfig(population=3, generations=3, eval_episodes=32))

FULL = Preset(
    memseq=EnvConfig("memory_sequence", 3, 24, 4, 3, 0.5),
    tsp=EnvConfig("tsp", 6, 1, 8, 3, 0.5),
    memseq_iw=EnvConfig("memory_sequence", 10, 24, 1, 5, 0.0),
    # 2048 envs: on a GPU one update costs about the same at 512 or 2048 envs (launch-bound: ~60 kernels per
    # step), so the larger batch buys better gradients for free; lr 1e-3 because the time budget allows only
    # ~2–3k gradient steps against the code's ~62k (16 envs x 3,900 updates at 2.5e-4)
    ppo=PPOConfig(lr=1e-3, num_envs=2048, num_steps=128, total_steps=2048 * 128 * 60, epochs=2, minibatches=8),
    ppo_tsp=PPOConfig(lr=1e-3, num_envs=2048, num_steps=64, total_steps=2048 * 64 * 60, epochs=2, minibatches=8,
                      ent_coef=0.05),
    ppo_iw=PPOConfig(lr=2.5e-4, num_envs=64, num_steps=32, total_steps=100_000, epochs=4, minibatches=4,
                     ent_coef=0.01, anneal_lr=False),
    hidden=256, embed=128, ssm_layers=4, generations=8, tasks=256, population=3, sweep=(0.05, 0.5, 2.0, 16.0),
    iw=InWeightsConfig(population=5, generations=6, eval_episodes=128),
    seconds={"ic": 240, "rl2": 240, "rl2long": 240, "sweep": 240, "tsp": 240, "in_weights": 250, "goal": 240},
    goal=EnvConfig("goal_sequence", 7, 50, 4, 1, 2.0, penalty=0.0),
    ppo_goal=PPOConfig(lr=1e-3, num_envs=2048, num_steps=128, total_steps=2048 * 128 * 60, epochs=2, minibatches=8))

TINY = replace(DEMO, ppo=replace(DEMO.ppo, num_envs=8, num_steps=16, total_steps=8 * 16 * 2, minibatches=2),
               ppo_tsp=replace(DEMO.ppo_tsp, num_envs=8, num_steps=16, total_steps=8 * 16 * 2, minibatches=2),
               ppo_iw=replace(DEMO.ppo_iw, num_envs=4, num_steps=8, total_steps=4 * 8 * 2),
               hidden=16, embed=16, ssm_layers=1, generations=2, tasks=8, sweep=(0.05, 0.5),
               iw=InWeightsConfig(population=2, generations=2, eval_episodes=4), baseline_factor=2,
               seconds={"ic": 2.0}, goal=EnvConfig("goal_sequence", 5, 6, 2, 1, 2.0, penalty=0.0),
               ppo_goal=replace(DEMO.ppo_goal, num_envs=8, num_steps=16, total_steps=8 * 16 * 2, minibatches=2))
"""A smoke run of every code path in seconds (``TINY=1`` of the GPU driver, and the bench test)."""

PRESETS = {"demo": DEMO, "full": FULL, "tiny": TINY}


def scaled(preset: Preset, factor: int) -> Preset:
    """``preset`` with ``factor``× the PPO steps of every training (in-weights: per generation and single)."""
    if factor == 1:
        return preset
    def more(cfg: PPOConfig) -> PPOConfig:
        return replace(cfg, total_steps=cfg.total_steps * factor)
    return replace(preset, ppo=more(preset.ppo), ppo_tsp=more(preset.ppo_tsp), ppo_iw=more(preset.ppo_iw),
                   ppo_goal=more(preset.ppo_goal))


def _probe_seconds(env: EnvConfig, cfg: PPOConfig, hidden: int, embed: int, trials: int, device: str,
                   core: Core) -> float:
    """Seconds per PPO update, measured on 2 updates of a throw-away agent (the first one warms up)."""
    probe = replace(cfg, total_steps=cfg.num_envs * cfg.num_steps * 3, anneal_lr=False)
    stamps: list[float] = []
    train_in_context(env, probe, hidden, embed, seed=12345, num_trials=trials, device=device,
                     on_update=lambda u, m: stamps.append(time.perf_counter()), **core)
    return max((stamps[-1] - stamps[0]) / (len(stamps) - 1), 1e-3)


def budgeted(env: EnvConfig, cfg: PPOConfig, hidden: int, embed: int, trials: int, seconds: float | None,
             device: str, core: Core) -> PPOConfig:
    """``cfg`` with total_steps set so that training takes about ``seconds`` (None: unchanged)."""
    if seconds is None:
        return cfg
    per_update = _probe_seconds(env, cfg, hidden, embed, trials, device, core)
    updates = max(int(seconds / per_update), 2)
    return replace(cfg, total_steps=updates * cfg.num_envs * cfg.num_steps)


def save_policy(policy: Policy, out: Path, name: str, meta: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in policy.net.state_dict().items()},
              str(out / f"policy_{name}.safetensors"))
    (out / f"train_{name}.json").write_text(json.dumps(
        meta | {"env": asdict(policy.env), "social": policy.social, "agent": policy.net.config_dict(),
                "history": policy.history}, indent=1))


def load_policy(out: Path, name: str, device: str) -> Policy:
    meta = json.loads((out / f"train_{name}.json").read_text())
    agent = meta["agent"]
    shape = {k: agent[k] for k in ("core", "ssm_layers", "ssm_state") if k in agent}     # GRU runs predate them
    net = make_agent(AgentConfig(agent["obs_dim"], agent["num_actions"], agent["hidden"], agent["embed"], **shape),
                     agent["members"]).to(device)
    net.load_state_dict({k: v.to(device) for k, v in load_file(str(out / f"policy_{name}.safetensors")).items()})
    return Policy(net, EnvConfig(**meta["env"]), meta["social"], meta["history"])


def core_args(preset: Preset, core: str) -> Core:
    """The agent-shape keywords of the trainers for ``core`` (``gru`` | ``s5``)."""
    return {"core": core, "ssm_layers": preset.ssm_layers}


def job_setup(preset: Preset, job: str) -> tuple[EnvConfig, PPOConfig, bool, int]:
    """(environment, PPO, social, episode trials) of an in-context training job: ``ic`` | ``rl2`` | ``rl2long``
    | ``sweep_<s>`` | ``tsp`` on Memory Sequence / TSP, or the Goal Sequence ``goal`` | ``goal_rl2`` |
    ``goal_rl2long`` (the ``ic`` | ``rl2`` | ``rl2long`` of that environment)."""
    env, cfg = (preset.goal, preset.ppo_goal) if job in GOAL_JOBS else (preset.memseq, preset.ppo)
    kind = GOAL_JOBS.get(job, job)
    social, trials = True, env.num_trials
    if kind in ("rl2", "rl2long"):
        social = False
        trials = trials * preset.generations if kind == "rl2long" else trials
    elif kind.startswith("sweep_"):
        env = replace(env, oracle_strength=float(kind.split("_", 1)[1]))
    elif kind == "tsp":
        env, cfg, trials = preset.tsp, preset.ppo_tsp, preset.tsp.num_trials
    elif kind != "ic":
        raise ValueError(f"unknown job {job!r}")
    return env, cfg, social, trials


def train_job(preset: Preset, job: str, out: Path, device: str, seed: int = 0, core: str = "gru") -> None:
    """One in-context training (the jobs of :func:`job_setup`)."""
    env, cfg, social, trials = job_setup(preset, job)
    seconds = preset.seconds.get(job.split("_")[0])
    cfg = budgeted(env, cfg, preset.hidden, preset.embed, trials, seconds, device, core_args(preset, core))
    start = time.perf_counter()
    policy = train_in_context(env, cfg, preset.hidden, preset.embed, seed, social=social, num_trials=trials,
                              device=device, **core_args(preset, core))
    save_policy(policy, out, job, {"seconds": time.perf_counter() - start, "ppo": asdict(cfg),
                                   "episode_trials": trials, "device": device})


def in_weights_job(preset: Preset, out: Path, device: str, seed: int = 0, core: str = "gru") -> None:
    """In-weights generations from scratch, the same with head resets (each later generation starts from the
    previous best with its last two layers re-initialised), and the single agent trained ``baseline_factor``×
    one generation's steps."""
    env, iw, g = preset.memseq_iw, preset.iw, preset.iw.generations
    cfg, shape = preset.ppo_iw, core_args(preset, core)
    seconds = preset.seconds.get("in_weights")
    if seconds is not None:
        per = _probe_seconds(replace(env, num_trials=1), replace(cfg, num_envs=cfg.num_envs * iw.population),
                             preset.hidden, preset.embed, 1, device, shape)
        updates = max(int(seconds * 0.9 / (2 * g + preset.baseline_factor) / per), 2)
        cfg = replace(cfg, total_steps=updates * cfg.num_envs * cfg.num_steps)
    start = time.perf_counter()
    social = run_in_weights(env, cfg, iw, preset.hidden, preset.embed, seed, device=device, **shape)
    resets = run_in_weights(env, cfg, replace(iw, resets=True), preset.hidden, preset.embed, seed, device=device,
                            **shape)
    long_cfg = replace(cfg, total_steps=cfg.total_steps * preset.baseline_factor)
    single = run_in_weights(env, long_cfg, replace(iw, generations=1), preset.hidden, preset.embed, seed,
                            device=device, social=False, **shape)
    out.mkdir(parents=True, exist_ok=True)
    (out / "in_weights.json").write_text(json.dumps({
        "env": asdict(env), "ppo": asdict(cfg), "iw": asdict(iw), "baseline_factor": preset.baseline_factor,
        "core": core,
        "seconds": time.perf_counter() - start, "device": device,
        "generation_scores": social.scores, "generation_best": social.best_scores(), "curves": social.curves,
        "resets_best": resets.best_scores(),
        "single_scores": single.scores[0], "single_best": single.best_scores()[0], "single_curve": single.curves[0],
        "steps_per_generation": cfg.total_steps, "single_steps": long_cfg.total_steps}, indent=1))


def all_jobs(preset: Preset) -> list[str]:
    return ["ic", "rl2", "rl2long", *[f"sweep_{s:g}" for s in preset.sweep if s != preset.memseq.oracle_strength],
            "tsp", "in_weights", *GOAL_JOBS]


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
