"""The one GPU job behind the shipped PSO adapter and the table's latents.

    python -m fewstep.bench.pso.gpu_run --out DIR --minilm MINILM_DIR --effnet EFFNET_FILE \
        --seconds 290 --n 300

Starting from the shipped MLCM student (4-step milestone sampler), within ``--seconds`` of training in total:
online PSO (reward = the zoo scorer's image-prompt cosine) and its naive baseline (the denoising loss on each pair's
winner, capped at PSO's step count), offline PSO on the concept of ``nodes.pso.concept`` and its naive baseline
(denoising loss on the target renders, same step count). Then every table cell's latents for the ``--n`` held-out
prompts at 1/2/4 steps, the concept prompt's samples, and batch-1 latency; judged anywhere with
``python -m fewstep.bench.pso.table --latents DIR/cells.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from fewstep.bench.mlcm import table as mlcm_table
from fewstep.nodes.pso import students
from fewstep.nodes.pso.train import (
    OfflineData,
    PSOConfig,
    StepLog,
    make_step,
    preset,
    sample_negatives,
    train,
)
from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder

log = logging.getLogger("fewstep.pso.gpu_run")
STEPS = (1, 2, 4)
# Share of --seconds per run; each baseline also stops at its PSO run's step count (the same budget in updates).
SHARES = {"online": 0.34, "naive_online": 0.30, "offline": 0.18, "naive_offline": 0.18}
ROWS = {"MLCM student": None, "PSO online": "online", "naive online": "naive_online",
        "PSO offline": "offline", "naive offline": "naive_offline"}


class Env:
    """Everything the runs share: device, encoder, base student, schedule, VAE, scorer, prompt pool, concept."""

    def __init__(self, args: argparse.Namespace) -> None:
        from fewstep.nodes.core.train.builtin import load_student, teacher_schedule
        from fewstep.nodes.core.train.prompts import procedural_pool
        from fewstep.nodes.mlcm.students import weights_dir
        from fewstep.nodes.pso.concept import concept_images, concept_scene
        from fewstep.nodes.zoo import data
        from fewstep.nodes.zoo.builtin import load_vae

        self.device = args.device
        self.autocast = torch.bfloat16 if args.device.startswith("cuda") else None
        self.enc = MiniLMTextEncoder.load(args.minilm, args.device)
        self.base = load_student(weights_dir() / students.BASE_STUDENT, args.device, torch.float32)
        self.base_sha256 = students.file_sha256(weights_dir() / students.BASE_STUDENT)
        self.schedule = teacher_schedule()
        self.vae, self.scale = load_vae(args.device, torch.float32, lean=False)
        self.judge = mlcm_table.Judge(args.device, args.effnet, self.enc)
        self.pool = procedural_pool(self.enc, args.prompts, seed=0, device=args.device)
        self.scene = concept_scene()
        self.caption = data.caption(self.scene)
        self.targets = concept_images(self.scene, args.targets)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return mlcm_table.decode(self.vae, self.scale, latents.float())

    def reward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.judge.scorer.score(images, prompts).float()

    @torch.no_grad()
    def concept_data(self, reference: Any, cfg: PSOConfig) -> OfflineData:
        x = self.targets.permute(0, 3, 1, 2).to(self.device) * 2 - 1                   # [N,3,64,64] in -1..1
        pos = self.vae.encode(x).latent_dist.mean * self.scale                          # [N,4,16,16]
        cond = self.enc.encode_tokens([self.caption])[0].float()                        # [1,T,D]
        neg = sample_negatives(reference, cond, cfg.num_negatives, tuple(pos.shape[1:]), list(cfg.timesteps),
                               cfg.seed)
        return OfflineData(pos.float(), neg, cond)


def run_one(env: Env, mode: str, seconds: float, batch: int, steps_cap: int | None) -> tuple[Any, dict]:
    """Train one adapter (``mode`` preset) for ``seconds`` (or ``steps_cap`` steps); returns (net, stats)."""
    cfg = preset(mode, steps=steps_cap or 1_000_000, batch_size=batch if "online" in mode else max(batch // 4, 4))
    policy, reference = students.lora_policy(env.base, env.schedule, cfg.lora_rank)
    step_log = StepLog.empty()
    data = env.concept_data(reference, cfg) if "offline" in mode else None
    step = make_step(cfg, policy, reference, pool=env.pool, reward=env.reward, decode=env.decode, data=data,
                     log=step_log)
    t0 = time.perf_counter()
    state = train(policy.net, step, cfg, device=env.device, autocast=env.autocast, max_seconds=seconds)
    stats = {"mode": mode, "steps": state.step, "seconds": time.perf_counter() - t0, "config": asdict(cfg),
             "losses_every_5": state.losses[::5], "loss_first": state.losses[0],
             "loss_last_20": sum(state.losses[-20:]) / len(state.losses[-20:]),
             "reward_every_5": step_log.reward[::5], "win_margin_mean": _mean(step_log.win_margin)}
    log.info("%s: %d steps in %.1fs, loss %.4f -> %.4f", mode, state.step, stats["seconds"], stats["loss_first"],
             stats["loss_last_20"])
    return policy.net, stats


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def make_run(unet: torch.nn.Module, steps: int) -> Callable[..., torch.Tensor]:
    """``run(noise, cond, uncond, gen) -> latents``: core's ``lcm`` sampler on the MLCM milestones (no CFG)."""
    from fewstep.nodes.core.guidance import BasicGuider
    from fewstep.nodes.core.samplers import sample_lcm
    from fewstep.nodes.core.train.consistency import mlcm_sigmas

    schedule = mlcm_table.core_schedule()
    den, sigmas = mlcm_table.unet_denoiser(unet, schedule), mlcm_sigmas(schedule, steps)

    def run(noise: torch.Tensor, cond: dict, uncond: dict, gen: torch.Generator | None = None) -> torch.Tensor:
        s = sigmas.to(noise.device)
        return sample_lcm(BasicGuider(den, cond), noise * (s[0] ** 2 + 1).sqrt(), s, generator=gen)
    return run


@torch.no_grad()
def generate(env: Env, unets: dict[str, torch.nn.Module], n: int, concept_n: int
             ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Latents of every (row, steps) cell: ``row|steps`` for the held-out prompts, ``concept|row|steps`` for the
    concept prompt; plus batch-1 latency per cell (sampling + decode)."""
    _, prompts = mlcm_table.eval_prompts(n)
    ctx = torch.cat([env.enc.encode_tokens(prompts[i:i + 250])[0] for i in range(0, n, 250)])
    concept_ctx = env.enc.encode_tokens([env.caption])[0].expand(concept_n, -1, -1)
    uncond = {"context": env.enc.encode_tokens([""])[0]}
    noise = torch.randn(max(n, concept_n), 4, 16, 16, generator=torch.Generator().manual_seed(1234)).to(env.device)
    latents, cells = {}, []
    for row, unet in unets.items():
        for steps in STEPS:
            run = make_run(unet, steps)
            gen = torch.Generator(env.device).manual_seed(7)
            latents[f"{row}|{steps}"] = torch.cat([run(noise[i:i + 250][:n - i], {"context": ctx[i:i + 250]}, uncond, gen)
                                                   for i in range(0, n, 250)]).half().cpu()
            gen = torch.Generator(env.device).manual_seed(11)
            latents[f"concept|{row}|{steps}"] = run(noise[:concept_n], {"context": concept_ctx}, uncond, gen).half().cpu()
            ms = mlcm_table.latency_ms(run, env.vae, env.scale, {"context": ctx[:1]}, uncond, env.device)
            cells.append({"method": row, "steps": steps, "ms_per_image": ms})
    return latents, cells


def train_all(env: Env, args: argparse.Namespace) -> tuple[dict[str, torch.nn.Module], dict[str, dict]]:
    """The four runs (PSO first, then its baseline capped at PSO's step count); adapters saved under --out."""
    nets, report = {}, {}
    for mode in ("online", "naive_online", "offline", "naive_offline"):
        cap = report[mode.removeprefix("naive_")]["steps"] if mode.startswith("naive_") else None
        cap = args.steps or cap
        nets[mode], report[mode] = run_one(env, mode, SHARES[mode] * args.seconds, args.batch, cap)
        meta = {"name": f"pso-{mode}", "base": students.BASE_STUDENT, "base_sha256": env.base_sha256,
                "lora_rank": report[mode]["config"]["lora_rank"],
                "lora_targets": list(students.LORA_TARGETS), "mode": mode, "timesteps": "milestones",
                "concept": env.caption if "offline" in mode else None}
        students.save_lora(args.out / f"fewstep-pso-{mode.replace('_', '-')}.safetensors", nets[mode], meta)
    return nets, report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.pso.gpu_run", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--minilm", default=None)
    p.add_argument("--effnet", default=None, help="EfficientNet-Lite0 fp16 safetensors (the scorer's image tower)")
    p.add_argument("--seconds", type=float, default=290.0, help="training wall time of all four runs together")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--concept-n", type=int, default=64)
    p.add_argument("--targets", type=int, default=5, help="concept target renders")
    p.add_argument("--prompts", type=int, default=4096)
    p.add_argument("--batch", type=int, default=128, help="online prompts per step (offline pairs: batch / 4)")
    p.add_argument("--steps", type=int, default=None, help="fixed step count per run (smoke tests)")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "gpu_run.log")])
    t0 = time.perf_counter()
    env = Env(args)
    log.info("loaded in %.1fs; concept: %s", time.perf_counter() - t0, env.caption)
    nets, report = train_all(env, args)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    unets = {row: (env.base if mode is None else students.merged_unet(nets[mode], env.base)).to(dtype)
             for row, mode in ROWS.items()}
    latents, cells = generate(env, unets, args.n, args.concept_n)
    save_file(latents, str(args.out / "cells.safetensors"))
    info = {"device": mlcm_table._device_name(args.device), "n": args.n, "concept_n": args.concept_n,
            "concept": env.caption, "cells": cells, "train": report, "torch": torch.__version__,
            "seconds_total": time.perf_counter() - t0}
    (args.out / "cells.json").write_text(json.dumps(info, indent=1))
    log.info("gpu_run done in %.0fs", info["seconds_total"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
