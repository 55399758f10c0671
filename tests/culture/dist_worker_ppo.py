"""A torchrun worker for the data-parallel PPO tests (run by ``launch`` or directly for 1 process).

python dist_worker_ppo.py OUT_DIR update      one PPO update on a fixed 8-env rollout; rank r of N takes env
                                               columns r·8/N ... (r+1)·8/N - 1 (one minibatch of all columns)
python dist_worker_ppo.py OUT_DIR train STEPS  train_in_context on a tiny MemSeq with checkpoints every update in
                                               OUT_DIR/ckpt (a re-run resumes)
Each rank writes ``rank<r>.json`` (weights, metrics, who saved what).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from fewstep.nodes.core.train.distributed import join, leave
from fewstep.nodes.culture.agent import AgentConfig, PopulationActorCritic
from fewstep.nodes.culture.envs import MemoryOracles, MemorySequence
from fewstep.nodes.culture.ppo import PPOConfig, PPOLoss, Rollout, collect, start, update
from fewstep.nodes.culture.runs import EnvConfig, train_in_context


def _weights(net: torch.nn.Module) -> list[float]:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).tolist()


def one_update(out: Path) -> dict:
    world = join("cpu")
    cfg = PPOConfig(num_envs=8, num_steps=12, total_steps=96, epochs=2, minibatches=1, ent_coef=0.01)
    env = MemorySequence(8, 3, 4, 2, MemoryOracles(2, 0.5))
    net = PopulationActorCritic(AgentConfig(env.obs_dim, env.num_actions, hidden=16, embed=16), seed=5)
    runner = start(net, env, torch.Generator().manual_seed(1))
    roll = collect(net, runner, cfg.num_steps, torch.Generator().manual_seed(2))     # the same on every rank
    with torch.no_grad():
        _, last_value, _ = net.step(runner.obs.view(1, 8, -1), runner.h, runner.reset)
    share = 8 // world.size
    cols = slice(world.rank * share, (world.rank + 1) * share)
    local = Rollout(*[getattr(roll, f)[:, :, cols] for f in ("obs", "resets", "actions", "logp", "values",
                                                            "rewards", "dones")], h0=roll.h0[:, cols])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, eps=1e-5)
    stats = update(net, optimizer, local, last_value[:, cols], cfg, PPOLoss(cfg.clip, cfg.vf_coef, cfg.ent_coef),
                   torch.Generator().manual_seed(3))
    return {"weights": _weights(net), "stats": stats, "world": world.size}


def train(out: Path, updates: int) -> dict:
    import fewstep.nodes.culture.ppo as ppo_module

    local: list[dict[str, float]] = []                   # this rank's own metrics of each update
    merge = ppo_module.global_metrics
    ppo_module.global_metrics = lambda metrics, world: merge(local.append(dict(metrics)) or metrics, world)
    env = EnvConfig("memory_sequence", size=3, length=4, num_trials=2, num_others=2)
    ppo = PPOConfig(num_envs=4, num_steps=8, total_steps=4 * 8 * updates, epochs=1, minibatches=2)
    try:
        policy = train_in_context(env, ppo, hidden=16, embed=16, seed=7, folder=out / "ckpt", checkpoint_every=1)
    finally:
        ppo_module.global_metrics = merge
    world = join("cpu")
    return {"weights": _weights(policy.net), "history": policy.history, "local": local, "world": world.size}


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    result = one_update(out) if argv[1] == "update" else train(out, int(argv[2]))
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    leave()                                                    # barrier, then the process group torn down
    return 0


if __name__ == "__main__":
    from fewstep.app.launch import exit_worker

    exit_worker(main(sys.argv[1:]))        # as fewstep run ends a worker
