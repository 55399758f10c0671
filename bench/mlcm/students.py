"""Training the built-in teacher's students: one command trains LCM, MLCM (stage 1 + 2) and SLAM students.

    python -m fewstep.bench.mlcm.students --out DIR [--minilm MINILM_DIR] [--seconds 30]    # on a GPU

Each student is written in the format that ``fewstep.nodes.mlcm.students`` loads (LoRA tensors + overrides,
recipe in the metadata); ``students-report.json`` holds the steps, time and losses of each.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from fewstep.nodes.core.train.adapter import LORA_TARGETS, UNetAdapter
from fewstep.nodes.core.train.builtin import OVERRIDE_PREFIX, teacher_schedule, teacher_unet
from fewstep.nodes.core.train.distill import DistillConfig, build_student, distill, preset
from fewstep.nodes.core.train.loop import merged_state_dict
from fewstep.nodes.core.train.prompts import PromptPool, procedural_pool
from fewstep.nodes.core.train.vp import VPNet
from fewstep.nodes.mlcm.students import LORA_RANK
from fewstep.nodes.mlcm.train import make_loss as mlcm_loss
from fewstep.nodes.slam.loss import make_loss as slam_loss

log = logging.getLogger("fewstep.bench.mlcm.students")


@dataclass(frozen=True)
class Recipe:
    """One student: the preset, its changes, the student it starts from, its sampler schedule."""

    preset: str
    changes: tuple[tuple[str, Any], ...]
    init: str | None
    timesteps: str          # "milestones" (MLCM subsets) or "lcm" (the 50-step skip grid)
    time_share: float = 1.0  # fraction of the per-student time cap (--seconds) this recipe gets

    def config(self, **more: Any) -> DistillConfig:
        return preset(self.preset, **(dict(self.changes) | more))


# Scaled to the 7.6 M-parameter teacher and one H200 shared by the stage-1 runs (concurrent processes, see
# gpu_run): batch 512 (launch-bound tiny UNet: 0.89 GFLOP per sample and forward, measured with torch's
# FlopCounterMode), state_step 250 (<= 4 guided teacher steps to reach a training state instead of TLCM's
# M - s <= 8: half the teacher cost), LoRA lr 3e-4 (TLCM: 1e-4 on SDXL with r = 64), stage 2 at lr/10 as in
# TLCM (1e-4 -> 1e-5). Steps are capped by wall time (--seconds), not by ``steps``.
_COMMON = (("batch_size", 512), ("state_step", 250), ("lora_rank", LORA_RANK), ("lr", 3e-4), ("steps", 3000))
RECIPES: dict[str, Recipe] = {
    "lcm":         Recipe("lcm", _COMMON, None, "lcm"),
    "mlcm_stage1": Recipe("mlcm", _COMMON, None, "milestones"),
    "mlcm":        Recipe("mlcm_stage2", (("batch_size", 512), ("lora_rank", 0), ("lr", 3e-5), ("steps", 600)),
                          "mlcm_stage1", "milestones", time_share=0.3),
    "slam":        Recipe("slam", _COMMON + (("state_source", "teacher"),), None, "lcm"),
    # ours: a quarter of the batch at exactly γ = 1, the inference condition (see SLAMLoss.gamma_one)
    "slam_g1":     Recipe("slam", _COMMON + (("state_source", "teacher"), ("gamma_one", 0.25)), None, "lcm"),
}
STAGE1 = ("lcm", "mlcm_stage1", "slam")      # the students the default command trains ("slam_g1": an ablation)


def distillation_setup(minilm: str | None, device: str, prompts: int) -> tuple[VPNet, PromptPool]:
    """What every student-training CLI starts from: the built-in teacher as an eps-VPNet (bf16 on GPUs)
    and a pool of ``prompts`` procedural training captions encoded by the MiniLM text encoder."""
    from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder

    enc = MiniLMTextEncoder.load(minilm, device)
    unet = teacher_unet(device, torch.bfloat16 if device != "cpu" else torch.float32)
    teacher = VPNet(UNetAdapter(unet), teacher_schedule(), "eps")
    return teacher, procedural_pool(enc, prompts, seed=0, device=device)


def student_net(teacher: nn.Module, cfg: DistillConfig) -> tuple[nn.Module, tuple[str, ...]]:
    """The network to train (SLAM: with a γ input) wrapped for the VPNet convention, + extra trainables."""
    if cfg.method == "slam":
        from fewstep.nodes.core.train.gamma import add_gamma_input

        return UNetAdapter(add_gamma_input(copy.deepcopy(teacher).float(), cfg.gamma_dim)), ("cond_proj",)
    return UNetAdapter(copy.deepcopy(teacher).float()), ()       # fp32 master weights, bf16 autocast


def export(net: nn.Module, cfg: DistillConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(LoRA tensors, override tensors) of a trained student; SLAM's γ = 1 is folded into an override."""
    unet = net.unet
    lora = {k: v.detach().half().cpu() for k, v in unet.state_dict().items() if "lora_" in k}
    if cfg.method != "slam":
        return lora, {}
    from diffusers import UNet2DConditionModel

    from fewstep.nodes.core.train.gamma import fold_gamma

    merged = merged_state_dict(unet)
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    with_gamma = UNet2DConditionModel(**config)
    with_gamma.load_state_dict(merged)
    plain = fold_gamma(with_gamma)
    return lora, {"time_embedding.linear_1.bias": plain.time_embedding.linear_1.bias.detach().float().cpu()}


def save_student(path: Path, lora: dict, overrides: dict, meta: dict) -> None:
    tensors = dict(lora) | {OVERRIDE_PREFIX + k: v for k, v in overrides.items()}
    save_file(tensors, str(path), metadata={"fewstep": json.dumps(meta)})


def train_one(name: str, teacher: VPNet, pool: PromptPool, nets: dict[str, nn.Module], device: str,
              seconds: float | None, **changes: Any) -> tuple[nn.Module, dict]:
    """Train student ``name`` (from ``nets[recipe.init]`` when given) for at most ``seconds``; (net, stats)."""
    recipe = RECIPES[name]
    cfg = recipe.config(**changes)
    if recipe.init is None:
        net, extra = student_net(teacher.net.unet, cfg)
    else:
        net, extra = copy.deepcopy(nets[recipe.init]), ()
    student = build_student(teacher, cfg, net=net, lora_targets=LORA_TARGETS, extra_trainable=extra)
    t0 = time.perf_counter()
    loss_fn = slam_loss(cfg) if cfg.method == "slam" else mlcm_loss(cfg)
    state = distill(teacher, student, pool, cfg, loss_fn, device=device, autocast=torch.bfloat16 if device != "cpu" else None,
                    max_seconds=seconds)
    stats = {"steps": state.step, "seconds": time.perf_counter() - t0, "loss_first": state.losses[0],
             "loss_last_100": sum(state.losses[-100:]) / len(state.losses[-100:]),
             "losses_every_10": state.losses[::10], "config": asdict(cfg), "init": recipe.init,
             "timesteps": recipe.timesteps}
    log.info("%s: %d steps in %.1fs, loss %.4f -> %.4f", name, state.step, stats["seconds"], stats["loss_first"],
             stats["loss_last_100"])
    return student.view.net, stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.mlcm.students", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--only", nargs="*", default=[*STAGE1, "mlcm"], choices=list(RECIPES))
    p.add_argument("--minilm", default=None, help="pruned MiniLM folder (default: the PyPI package)")
    p.add_argument("--seconds", type=float, default=None, help="wall-time cap per student (steps stop early)")
    p.add_argument("--stage2-seconds", type=float, default=None,
                   help="wall-time cap of students started from another (default: --seconds x its time share)")
    p.add_argument("--prompts", type=int, default=4096)
    p.add_argument("--steps", type=int, default=None, help="override every recipe's step count (smoke runs)")
    p.add_argument("--batch", type=int, default=None, help="override every recipe's batch size (smoke runs)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    teacher, pool = distillation_setup(args.minilm, args.device, args.prompts)
    args.out.mkdir(parents=True, exist_ok=True)
    nets: dict[str, nn.Module] = {}
    report = {}
    for name in args.only:
        changes = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch)) if v is not None}
        seconds = None if args.seconds is None else args.seconds * RECIPES[name].time_share
        if RECIPES[name].init and args.stage2_seconds:
            seconds = args.stage2_seconds
        nets[name], report[name] = train_one(name, teacher, pool, nets, args.device, seconds, **changes)
        lora, overrides = export(nets[name], RECIPES[name].config())
        meta = {"name": name, "lora_rank": LORA_RANK, "lora_targets": list(LORA_TARGETS),
                "base": "fewstep-tiny-teacher.safetensors", "timesteps": RECIPES[name].timesteps,
                "method": RECIPES[name].preset}
        save_student(args.out / f"fewstep-{name.replace('_', '-')}-student.safetensors", lora, overrides, meta)
        suffix = "" if set(args.only) == {*STAGE1, "mlcm"} else "-" + "-".join(args.only)
        (args.out / f"students-report{suffix}.json").write_text(json.dumps(report, indent=1))  # after each one
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
