"""Training the TDM students of the built-in teacher: recipes, export as LoRA files, the one command.

    python -m fewstep.bench.tdm.students --out DIR [--minilm MINILM_DIR] [--seconds 280]    # on a GPU

The files are in the format ``fewstep.nodes.tdm.students`` loads. The fake score is a full copy of the teacher
during training and is not shipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from fewstep.bench.mlcm.students import distillation_setup
from fewstep.nodes.core.train.adapter import LORA_TARGETS, UNetAdapter
from fewstep.nodes.core.train.prompts import PromptPool
from fewstep.nodes.core.train.vp import VPNet
from fewstep.nodes.tdm.steps import add_steps_input, has_steps_input
from fewstep.nodes.tdm.students import OVERRIDE_PREFIX, STEPS_KEY
from fewstep.nodes.tdm.train import TDMConfig, build_run, distill_tdm, preset

log = logging.getLogger("fewstep.bench.tdm.students")


LORA_RANK = 16          # 2.2 MB in fp16 on the teacher's 12 target kinds (the session's 2.5 MB cap per file)


@dataclass(frozen=True)
class Recipe:
    """One student: its preset, the changes, the share of the time budget, the step counts it is judged at."""

    preset: str
    changes: tuple[tuple[str, Any], ...]
    time_share: float
    eval_steps: tuple[int, ...]

    def config(self, **more: Any) -> TDMConfig:
        return preset(self.preset, **(dict(self.changes) | more))


# Scaled to the 7.6 M-parameter teacher and ~2-3 minutes of one (shared) H200: batch 512 (the tiny UNet is
# launch-bound, so a big batch is almost free), student LoRA r16 at lr 1.5e-4 (fake lr 3e-4 full copy, ratio 1/2:
# the demo's 1/5 is for a full student over 10k steps; a zero-initialised LoRA with a few hundred steps needs
# more), CFG 5, T' = 900. K = 4 and K = 1 get equal time, so their comparison is the paper's ablation.
_COMMON = (("batch_size", 512), ("lora_rank", LORA_RANK), ("lr", 3e-4), ("generator_lr_ratio", 0.5),
           ("steps", 20000))
RECIPES: dict[str, Recipe] = {
    "tdm_unify": Recipe("tdm_unify", _COMMON, 0.50, (1, 2, 4)),
    "tdm":       Recipe("tdm", _COMMON, 0.25, (4,)),
    "dmd":       Recipe("dmd", _COMMON, 0.25, (1,)),
}
FILES = {name: f"fewstep-{name.replace('_', '-')}-student.safetensors" for name in RECIPES}


def networks(teacher_net: nn.Module, cfg: TDMConfig) -> tuple[nn.Module, nn.Module, tuple[str, ...]]:
    """(student, fake, extra trainables): fp32 copies of the teacher UNet, with the steps input for unify."""
    import copy

    base = copy.deepcopy(teacher_net).float()
    if cfg.unify:
        base = add_steps_input(base)
        return UNetAdapter(base), UNetAdapter(copy.deepcopy(base)), ("cond_proj",)
    return UNetAdapter(base), UNetAdapter(copy.deepcopy(base)), ()


def train_one(name: str, teacher: VPNet, pool: PromptPool, device: str, seconds: float | None,
              **changes: Any) -> tuple[nn.Module, dict]:
    """Train student ``name``; returns (the student UNet, with LoRA still attached; stats)."""
    recipe = RECIPES[name]
    cfg = recipe.config(**changes)
    student_net, fake_net, extra = networks(teacher.net.unet, cfg)
    run = build_run(teacher, cfg, student_net.to(device), fake_net.to(device), LORA_TARGETS, extra)
    steplog: list[dict] = []
    t0 = time.perf_counter()
    state = distill_tdm(teacher, run, pool, cfg, device=device,
                        autocast=torch.bfloat16 if device != "cpu" else None,
                        max_seconds=None if seconds is None else seconds * recipe.time_share, log=steplog)
    every = max(1, len(steplog) // 100)
    stats = {"steps": state.step, "seconds": time.perf_counter() - t0, "config": asdict(cfg),
             "generator_loss_every": [round(s["generator"], 5) for s in steplog[::every]],
             "fake_loss_every": [round(s["fake"], 5) for s in steplog[::every]], "log_every": every,
             "eval_steps": list(recipe.eval_steps)}
    log.info("%s: %d steps in %.1fs, generator loss %.4f -> %.4f, fake %.4f -> %.4f", name, state.step,
             stats["seconds"], steplog[0]["generator"], steplog[-1]["generator"], steplog[0]["fake"],
             steplog[-1]["fake"])
    return run.pair.student.unet, stats


def export(unet: nn.Module) -> dict[str, torch.Tensor]:
    """The shipped tensors: LoRA adapters (fp16) + the steps input as an override (fp32, [C0, 8])."""
    out = {k: v.detach().half().cpu() for k, v in unet.state_dict().items() if "lora_" in k}
    if has_steps_input(unet):
        out[OVERRIDE_PREFIX + STEPS_KEY] = unet.time_embedding.cond_proj.weight.detach().float().cpu()
    return out


def save_student(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    save_file(tensors, str(path), metadata={"fewstep": json.dumps(meta)})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.tdm.students", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--only", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--minilm", default=None, help="pruned MiniLM folder (default: the PyPI package)")
    p.add_argument("--seconds", type=float, default=None, help="wall-time budget of all students together")
    p.add_argument("--prompts", type=int, default=4096)
    p.add_argument("--steps", type=int, default=None, help="override every recipe's step count (smoke runs)")
    p.add_argument("--batch", type=int, default=None, help="override every recipe's batch size (smoke runs)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    teacher, pool = distillation_setup(args.minilm, args.device, args.prompts)
    args.out.mkdir(parents=True, exist_ok=True)
    share = sum(RECIPES[n].time_share for n in args.only)
    report = {}
    for name in args.only:
        changes = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch)) if v is not None}
        seconds = None if args.seconds is None else args.seconds / share
        net, report[name] = train_one(name, teacher, pool, args.device, seconds, **changes)
        cfg = RECIPES[name].config(**changes)
        meta = {"name": name, "lora_rank": LORA_RANK, "lora_targets": list(LORA_TARGETS), "unify": cfg.unify,
                "student_steps": cfg.student_steps, "total_steps": cfg.total_steps,
                "base": "fewstep-tiny-teacher.safetensors", "method": RECIPES[name].preset}
        save_student(args.out / FILES[name], export(net), meta)
        (args.out / "students-report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
