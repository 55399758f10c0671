"""Training the R0 students of the built-in teacher: one command trains one ablation arm (time-capped), saves
it in the format ``fewstep.nodes.r0.students`` loads, and writes ``<arm>-report.json`` (steps, time, the
per-step rewards).

    python -m fewstep.bench.r0.students --arm r0 --out DIR [--minilm MINILM_DIR] [--seconds 240] [--device cuda]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewstep.nodes.r0.students import student_file
from fewstep.nodes.r0.train import (
    ARMS,
    LORA_TARGETS,
    R0Config,
    arm,
    make_rewards,
    prepare_student,
    train_r0,
    vae_decoder,
)

log = logging.getLogger("fewstep.bench.r0.students")


def reward_library(device: str, encoder: Any, effnet: str | None = None) -> dict[str, Any]:
    """The three zoo rewards on ``device``; the scorer is assembled from its heads, EfficientNet-Lite0 (``effnet``:
    a safetensors copy, None = the PyPI package) and the given MiniLM ``encoder`` (as ``nodes.mlcm.table.Judge``
    does, so nothing but the carried files is needed on a GPU machine)."""
    from fewstep.nodes.core.rewards import ProbeReward, SaturationReward, ScorerReward
    from fewstep.nodes.zoo.builtin import SCORER_FILE, Scorer, _load, load_probe
    from fewstep.nodes.zoo.effnet import load_efficientnet_lite0
    from fewstep.nodes.zoo.models import ScorerHeads

    state, cfg = _load(SCORER_FILE, None)
    heads = ScorerHeads(**cfg["heads"])
    heads.load_state_dict({k: v.float() for k, v in state.items()})
    scorer = Scorer(heads.to(device), load_efficientnet_lite0(effnet, device=device), encoder)
    return {"scorer": ScorerReward(scorer), "probe": ProbeReward(load_probe(device)), "saturation": SaturationReward()}


def export(net: nn.Module, name: str, cfg: R0Config) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(fp16 adapter tensors, recipe metadata) of a trained LoRA student."""
    lora = {k: v.detach().half().cpu().contiguous() for k, v in net.unet.state_dict().items() if "lora_" in k}
    if not lora:
        raise ValueError(f"R0 student {name!r} has no LoRA adapters (lora_rank = {cfg.lora_rank}); only LoRA "
                         "students are exported")
    meta = {"name": name, "method": "r0", "lora_rank": cfg.lora_rank, "lora_targets": list(LORA_TARGETS),
            "base": "fewstep-tiny-teacher.safetensors", "timesteps": list(cfg.timesteps),
            "guidance": cfg.guidance, "eta": cfg.eta, "config": asdict(cfg)}
    return lora, meta


def save_student(path: Path, lora: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file(lora, str(path), metadata={"fewstep": json.dumps(meta)})


def train_arm(name: str, out: Path, device: str, seconds: float | None, minilm: str | None, prompts: int,
              effnet: str | None = None, until: float | None = None, **changes: Any) -> dict[str, Any]:
    """Train arm ``name`` on the built-in teacher, save its student + report into ``out``; returns the report."""
    from fewstep.nodes.core.train.adapter import UNetAdapter
    from fewstep.nodes.core.train.builtin import teacher_schedule, teacher_unet
    from fewstep.nodes.core.train.prompts import procedural_pool
    from fewstep.nodes.core.train.vp import VPNet
    from fewstep.nodes.zoo.builtin import load_vae
    from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder

    t0 = time.perf_counter()
    cfg = arm(name, **changes)
    enc = MiniLMTextEncoder.load(minilm, device)
    net = prepare_student(UNetAdapter(copy.deepcopy(teacher_unet(device)).float()), cfg)
    student = VPNet(net, teacher_schedule(), "eps")
    pool = procedural_pool(enc, prompts, seed=0, device=device)
    vae, scale = load_vae(device, torch.float32)
    rewards = make_rewards(cfg, reward_library(device, enc, effnet))
    load_s = time.perf_counter() - t0
    if until is not None:
        seconds = max(1.0, until - time.time())
    t1 = time.perf_counter()
    autocast = torch.bfloat16 if device.startswith("cuda") else None
    state, history = train_r0(student, pool, rewards, vae_decoder(vae, scale), cfg, device=device, autocast=autocast,
                              max_seconds=seconds, meta={"arm": name})
    train_s = time.perf_counter() - t1
    lora, meta = export(net, name, cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_student(out / student_file(name), lora, meta | {"steps": state.step})
    report = {"arm": name, "steps": state.step, "train_seconds": train_s, "load_seconds": load_s,
              "config": asdict(cfg), "first": history[0] if history else {},
              "last_20": _mean(history[-20:]), "every_10": history[::10], "device": device}
    (out / f"{name}-report.json").write_text(json.dumps(report, indent=1))
    log.info("%s: %d steps in %.0fs (load %.0fs); first %s; last-20 mean %s", name, state.step, train_s, load_s,
             report["first"], report["last_20"])
    return report


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys() if rows else ()
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.r0.students", description=__doc__.split("\n")[0])
    p.add_argument("--arm", required=True, choices=sorted(ARMS))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--minilm", default=None, help="pruned MiniLM folder (default: the PyPI package)")
    p.add_argument("--seconds", type=float, default=None, help="wall-time cap of the training loop")
    p.add_argument("--until", type=float, default=None,
                   help="unix time at which training stops, whatever loading took (overrides --seconds)")
    p.add_argument("--effnet", default=None, help="EfficientNet-Lite0 fp16 safetensors (default: PyPI package)")
    p.add_argument("--prompts", type=int, default=4096)
    p.add_argument("--steps", type=int, default=100_000, help="step cap (the run normally stops on --seconds)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--reward-chunk", type=int, default=None, help="rewards on this many images at a time (memory)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no spin-waiting on busy hosts)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    changes: dict[str, Any] = {"steps": args.steps}
    if args.batch is not None:
        changes["batch_size"] = args.batch
    if args.reward_chunk is not None:
        changes["reward_chunk"] = args.reward_chunk
    train_arm(args.arm, args.out, args.device, args.seconds, args.minilm, args.prompts, args.effnet, args.until,
              **changes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
