"""Cultural-accumulation nodes: an environment (ENV), an in-context learner trained with PPO (POLICY), the
in-context generational loop and in-weights generations, each with METRICS and a plot (IMAGE)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fewstep.app.api import Boolean, Combo, Float, Int, Link, Node, NodeOutput, Output, Schema, String
from fewstep.nodes.core.train.seeds import fixed_seed

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from fewstep.nodes.culture.runs import EnvConfig, Policy

CATEGORY = "fewstep/culture"
RECIPES = ("widgets", "paper")


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def _cpu_threads(device: str) -> Iterator[None]:
    """One torch thread while training on the CPU, restored after. The tensors are tiny ([32, 64] GRU steps):
    measured on the shared 2-core machine (load ~18), 3 PPO updates took 228 s with 2 threads and 9 s with 1
    (the thread pool spin-waits); the example graphs need this to finish in about a minute."""
    import torch

    before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_folder(run_name: str, kind: str, fields: dict[str, object]) -> Path:
    """``<models>/checkpoints/culture/<kind>/<run_name>-<hash of the settings>``: unchanged settings resume."""
    from fewstep.app.api import current_paths, safe_child

    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:10]
    root = current_paths().model_dirs("checkpoints")[0] / "culture" / kind
    return safe_child(root, f"{run_name}-{digest}", "run_name", allow_subfolders=False)


def _image(img: Image) -> torch.Tensor:
    """PIL RGB → IMAGE [1, H, W, 3] in 0..1."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


def _progress(total: int):  # noqa: ANN202 - a closure over the engine's progress hook
    from fewstep.nodes.core.train.loop import report_training

    def hook(u: int, metrics: dict[str, float]) -> None:
        # ``value`` is the progress event's own field: the value-function loss travels as ``value_loss``
        shown = {k: v for k, v in metrics.items() if k in ("loss", "return", "entropy")}
        report_training(u + 1, total, shown | {"value_loss": metrics["value"], "step": float(u + 1)})
    return hook


class CultureEnvironment(Node):
    """A vectorised multi-trial environment of the paper (Memory Sequence or partially observable TSP)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="CultureEnvironment", display_name="RL Environment (cultural accumulation)", category=CATEGORY,
            description="Memory Sequence: guess a hidden digit sequence, +1 per right digit, a wrong one ends the "
                        "trial. TSP: visit every city once from city 0 seeing only your moves and rewards. Goal "
                        "Sequence: visit 3 goals of a grid in a hidden cyclic order (3x3 egocentric view). Episodes "
                        "are K trials of one task; P noisy oracles act beside the agent, visible with a "
                        "probability annealed 1 → 0 over the trials.",
            inputs=[Combo("environment", ["memory_sequence", "tsp", "goal_sequence"]),
                    Int("size", 3, min=2, max=64, tooltip="digit types (Memory Sequence), cities (TSP, paper code 6) or "
                        "grid side (Goal Sequence, paper 7)"),
                    Int("trial_length", 24, min=1, max=256, tooltip="Memory Sequence digits per trial (paper 24); Goal "
                        "Sequence steps per trial (code 50)"),
                    Int("num_trials", 4, min=2, max=64, tooltip="K trials per episode (paper: 4; TSP code 8)"),
                    Int("num_others", 3, min=1, max=16, tooltip="P oracles / previous-generation agents (paper 3)"),
                    Float("oracle_strength", 0.5, min=0.0, max=100.0, step=0.05,
                          tooltip="Memory Sequence: oracle accuracy p = 1 - 1/U(1, 1+s); TSP: temperature U(0, s); "
                          "Goal Sequence: the oracle acts at random with probability 1/(1+s)"),
                    Int("task_seed", 420, min=0, max=2**31 - 1, tooltip="seed of the fixed evaluation tasks"),
                    Float("penalty", 1.0, min=0.0, max=10.0, step=0.1, optional=True,
                          tooltip="Goal Sequence: entering a wrong goal pays -penalty (paper code 1). Small "
                          "learners at demo size learn to avoid every goal at 1; the demo bench uses 0")],
            outputs=[Output("ENV", "ENV")])

    @classmethod
    def execute(cls, environment: str, size: int, trial_length: int, num_trials: int, num_others: int,
                oracle_strength: float, task_seed: int, penalty: float = 1.0) -> NodeOutput:
        from fewstep.nodes.culture.runs import EnvConfig

        return NodeOutput(EnvConfig(environment, size, trial_length, num_trials, num_others, oracle_strength,
                                    task_seed, penalty=penalty))


def _ppo(kw: dict[str, object], paper: bool) -> tuple[object, int, int]:
    """(PPOConfig, hidden, embed) from the widgets, or the paper code's MemSeq in-context recipe."""
    from fewstep.nodes.culture.ppo import PPOConfig

    if paper:
        return PPOConfig(ent_coef=float(kw["entropy"])), 256, 128
    cfg = PPOConfig(lr=float(kw["learning_rate"]), num_envs=int(kw["num_envs"]), num_steps=int(kw["num_steps"]),
                    total_steps=int(kw["total_steps"]), epochs=int(kw["epochs"]), minibatches=int(kw["minibatches"]),
                    ent_coef=float(kw["entropy"]))
    return cfg, int(kw["hidden"]), int(kw["embed"])


def _core(kw: dict[str, object], paper: bool) -> dict[str, object]:
    """The trainers' ``core`` / ``ssm_layers`` keywords (the paper recipe: the S5 RL code's 4 blocks)."""
    return {"core": str(kw["core"]), "ssm_layers": 4 if paper else int(kw["ssm_layers"])}


def _core_fields(core: dict[str, object]) -> dict[str, object]:
    """What the core adds to a run's fingerprint: nothing for the GRU, so GRU runs keep their folders."""
    return core if core["core"] != "gru" else {}


def _ppo_inputs(total: int, envs: int, steps: int, hidden: int, lr: float, entropy: float,
                minibatches: int, epochs: int) -> list:
    return [Int("total_steps", total, min=1, max=10**10, tooltip="environment steps (paper 8e6 in-context)"),
            Int("num_envs", envs, min=1, max=65536, tooltip="parallel episodes (paper code 16; thousands on a GPU)"),
            Int("num_steps", steps, min=1, max=4096, tooltip="rollout length per update (paper code 128)"),
            Int("hidden", hidden, min=4, max=2048, tooltip="GRU width (paper code 256)"),
            Int("embed", min(hidden, 128), min=4, max=2048, tooltip="encoder / head width (paper code 128)"),
            Combo("core", ["gru", "s5"], tooltip="recurrent core: gru (the paper notebook's) or s5 (the paper's S5 "
                  "state-space layers: hidden = model width = state size)"),
            Int("ssm_layers", 2, min=1, max=16, tooltip="S5 blocks (paper code 4; recipe = paper uses 4); unused by gru"),
            Float("learning_rate", lr, min=0.0, max=1.0, step=1e-5, round=1e-6, tooltip="Adam, annealed to 0"),
            Float("entropy", entropy, min=0.0, max=1.0, step=0.005, tooltip="entropy bonus (0.03 MemSeq, 0.05 TSP)"),
            Int("minibatches", minibatches, min=1, max=1024), Int("epochs", epochs, min=1, max=64)]


class CultureTrainInContext(Node):
    """Alg. 1: an RL² learner (GRU or S5 actor-critic, PPO) trained on K-trial episodes with noisy oracles."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="CultureTrainInContext", display_name="Train In-Context Learner (RL2 + noisy oracles)",
            category=CATEGORY,
            description="Recurrent PPO over K-trial episodes with a GRU or S5 agent. social: the oracles are visible "
                        "with probability 1 - k/(K-1) in trial k (Alg. 1); off: the single-lifetime RL2 baseline "
                        "(others hidden). Checkpoints into the models folder; a re-run with the same settings resumes.",
            inputs=[Link("env", "ENV"),
                    Combo("recipe", list(RECIPES), tooltip="widgets: the values below; paper: the paper code's "
                          "MemSeq recipe (8e6 steps, 16 envs x 128, GRU 256, 2 epochs x 8 minibatches)"),
                    Boolean("social", True, tooltip="train with the noisy oracles (off = RL2 baseline)"),
                    Int("episode_trials", 0, min=0, max=1024,
                        tooltip="trials per training episode (0 = the environment's K; RL2-long baseline: K x G)"),
                    *_ppo_inputs(60_000, 32, 64, 64, 1e-3, 0.03, 4, 2), fixed_seed(),
                    String("run_name", "culture", tooltip="checkpoints: <models>/checkpoints/culture/train/<run>-<hash>"),
                    Int("checkpoint_every", 10, min=0, max=10**9, tooltip="updates between checkpoints (0 = at the end)")],
            outputs=[Output("POLICY", "POLICY"), Output("METRICS", "METRICS")])

    @classmethod
    def execute(cls, env: EnvConfig, recipe: str, social: bool, episode_trials: int, seed: int, run_name: str,
                checkpoint_every: int, **kw: object) -> NodeOutput:
        from fewstep.nodes.culture.runs import config_fields, train_in_context

        cfg, hidden, embed = _ppo(kw, recipe == "paper")
        core = _core(kw, recipe == "paper")
        trials = episode_trials or env.num_trials
        folder = _run_folder(run_name, "train", config_fields(env, cfg, hidden=hidden, embed=embed, seed=seed,
                                                              social=social, trials=trials, **_core_fields(core)))
        with _cpu_threads(_device()):
            policy = train_in_context(env, cfg, hidden, embed, seed, social=social, num_trials=trials, folder=folder,
                                      checkpoint_every=checkpoint_every, device=_device(),
                                      on_update=_progress(cfg.num_updates), **core)
        last = policy.history[-1] if policy.history else {}
        metrics = {"updates": len(policy.history), "env_steps": cfg.num_updates * cfg.num_envs * cfg.num_steps} | {
            k: round(v, 4) for k, v in last.items() if k == "return" or k.startswith("trial_")}
        return NodeOutput(policy, metrics, ui={"metrics": [metrics],
                                               "loss": [h.get("loss", 0.0) for h in policy.history]})


class CultureInContextGenerations(Node):
    """Alg. 2: generations of the frozen learner, each watching the previous one's final trial."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="CultureInContextGenerations", display_name="In-Context Accumulation (generations)",
            category=CATEGORY,
            description="Plays G generations on fixed tasks: generation g+1 sees generation g's agents replay "
                        "their final trial (visible with annealed probability; on Goal Sequence the best one acts "
                        "as a body in the grid, and generation 0 has the noisy oracle's body). Plots the score per "
                        "trial per generation against the single-lifetime RL2 baseline (optional) and the best "
                        "noisy oracle.",
            inputs=[Link("policy", "POLICY"), Int("generations", 4, min=1, max=64, tooltip="G (paper: 8)"),
                    Int("tasks", 32, min=1, max=1_000_000, tooltip="fixed tasks evaluated in parallel"),
                    Int("population", 3, min=1, max=64, tooltip="agents per generation per task"),
                    fixed_seed(), String("run_name", "culture", tooltip="per-generation checkpoints (resume)"),
                    Link("baseline", "POLICY", optional=True,
                         tooltip="an RL2 policy trained without oracles: its curve over G x K trials")],
            outputs=[Output("METRICS", "METRICS"), Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, policy: Policy, generations: int, tasks: int, population: int, seed: int, run_name: str,
                baseline: Policy | None = None) -> NodeOutput:
        from fewstep.nodes.core.train.loop import report_training
        from fewstep.nodes.culture.runs import config_fields, run_in_context, trial_curve
        from fewstep.nodes.culture.summary import in_context_summary

        folder = _run_folder(run_name, "generations", config_fields(
            policy.env, None, seed=seed, tasks=tasks, population=population,
            weights=_weights_digest(policy)))
        with _cpu_threads(str(policy.net.device.type)):
            gens = run_in_context(policy, generations, tasks, population, seed, folder=folder,
                                  on_generation=lambda g, _: report_training(g + 1, generations, {"generation": g}))
            k = policy.env.num_trials
            oracle = trial_curve(policy, k, max(tasks, 64), seed, follow_oracle=True)
            rl2 = trial_curve(baseline, generations * k, tasks, seed) if baseline is not None else None
        metrics, image = in_context_summary(gens, k, oracle, rl2, policy.env.name)
        return NodeOutput(metrics, _image(image), ui={"metrics": [metrics]})


def _weights_digest(policy: Policy) -> str:
    """A short content hash of the policy's weights (part of the generation run folder)."""
    h = hashlib.sha256()
    for name, value in sorted(policy.net.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


class CultureInWeights(Node):
    """Alg. 3: each generation trains from scratch (or with reset heads) beside the previous best agents."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="CultureInWeights", display_name="In-Weights Accumulation (generations)", category=CATEGORY,
            description="Trains G generations of a population on the environment's one fixed task (K = 1), each "
                        "with the previous generation's agents visible with probability annealed 1 -> 0 over "
                        "training; the best member by final score passes on (GRU or S5 agents). Also trains the "
                        "single-lifetime baseline for baseline_factor x the steps of one generation.",
            inputs=[Link("env", "ENV"), Combo("recipe", list(RECIPES),
                                              tooltip="paper: 1e5 steps/gen, 4 envs x 128, 4 epochs x 4, population 5"),
                    Int("generations", 3, min=1, max=64, tooltip="G (paper 8)"),
                    Int("population", 3, min=1, max=64, tooltip="N_pop (paper 5)"),
                    Boolean("resets", False, tooltip="start later generations from the best with its last two layers reset"),
                    Int("baseline_factor", 5, min=0, max=64, tooltip="single-lifetime baseline steps / generation steps (0 = none)"),
                    *_ppo_inputs(8192, 4, 64, 32, 2.5e-3, 0.01, 2, 2), fixed_seed(),
                    String("run_name", "culture", tooltip="per-generation checkpoints (resume)")],
            outputs=[Output("POLICY", "POLICY"), Output("METRICS", "METRICS"), Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, env: EnvConfig, recipe: str, generations: int, population: int, resets: bool,
                baseline_factor: int, seed: int, run_name: str, **kw: object) -> NodeOutput:
        from dataclasses import replace

        from fewstep.nodes.culture.accumulate import InWeightsConfig
        from fewstep.nodes.culture.ppo import PPOConfig
        from fewstep.nodes.culture.runs import Policy, config_fields, run_in_weights
        from fewstep.nodes.culture.summary import in_weights_summary

        cfg, hidden, embed = _ppo(kw, False)
        core = _core(kw, recipe == "paper")
        if recipe == "paper":
            cfg, hidden, embed = PPOConfig(num_envs=4, num_steps=128, total_steps=100_000, epochs=4, minibatches=4,
                                           ent_coef=0.01, anneal_lr=False), 256, 128
        iw = InWeightsConfig(population=population, generations=generations, resets=resets)
        fields = config_fields(env, cfg, hidden=hidden, embed=embed, seed=seed, iw=iw.__dict__, **_core_fields(core))
        device = _device()
        with _cpu_threads(device):
            social = run_in_weights(env, cfg, iw, hidden, embed, seed, device=device,
                                    folder=_run_folder(run_name, "in_weights", fields), **core)
            single = None
            if baseline_factor:
                long_cfg = replace(cfg, total_steps=cfg.total_steps * baseline_factor)
                single = run_in_weights(env, long_cfg, replace(iw, generations=1), hidden, embed, seed, social=False,
                                        device=device, folder=_run_folder(run_name, "in_weights_single",
                                                                          fields | {"factor": baseline_factor}), **core)
        metrics, image = in_weights_summary(social, single, baseline_factor)
        policy = Policy(social.best, replace(env, num_trials=1), True)
        return NodeOutput(policy, metrics, _image(image), ui={"metrics": [metrics]})


NODES: tuple[type[Node], ...] = (CultureEnvironment, CultureTrainInContext, CultureInContextGenerations,
                                 CultureInWeights)
