"""The shipped TDM students of the built-in teacher: their file format and loading.

Each student is a LoRA (peft, rank 16, fp16) on the teacher UNet; TDM-unify's adds the step-count input as an
``override.time_embedding.cond_proj.weight`` tensor. :func:`load_student` rebuilds the UNet (K-aware for
unify); :func:`plain_student` gives a teacher-architecture UNet for one step count. Training them (recipes,
export, the one command) is ``bench/tdm/students.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from fewstep.nodes.core.train.builtin import teacher_unet
from fewstep.nodes.core.train.devices import place
from fewstep.nodes.core.train.loop import add_lora, merged_state_dict
from fewstep.nodes.tdm.steps import add_steps_input, fold_steps, has_steps_input, unet_config

OVERRIDE_PREFIX = "override."
STEPS_KEY = "time_embedding.cond_proj.weight"


def student_meta(path: str | Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["fewstep"])


def load_student(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """The student UNet (teacher + merged LoRA; with the steps input for a unify student) from a shipped file."""
    path = Path(path)
    meta = student_meta(path)
    tensors = load_file(str(path))
    base = teacher_unet("cpu")
    if meta["unify"]:
        base = add_steps_input(base)
        base.time_embedding.cond_proj.weight.data.copy_(tensors[OVERRIDE_PREFIX + STEPS_KEY].float())
    shape = unet_config(base)
    unet = add_lora(base, meta["lora_rank"], meta["lora_targets"])
    lora = {k: v.float() for k, v in tensors.items() if not k.startswith(OVERRIDE_PREFIX)}
    missing, unexpected = unet.load_state_dict(lora, strict=False)
    if unexpected or any("lora_" in k for k in missing):
        raise ValueError(f"{path.name}: adapter tensors do not fit the teacher ({unexpected[:2]} / "
                         f"{[k for k in missing if 'lora_' in k][:2]})")
    from diffusers import UNet2DConditionModel

    plain = UNet2DConditionModel(**shape)
    plain.load_state_dict(merged_state_dict(unet), strict=True)
    return place(plain, device, dtype).eval().requires_grad_(False)


def plain_student(unet: nn.Module, steps: int) -> nn.Module:
    """A teacher-architecture UNet for ``steps``-step sampling (unify: K folded in; else ``unet`` itself)."""
    return fold_steps(unet, steps) if has_steps_input(unet) else unet


def weights_dir() -> Path:
    """Where the shipped students live (package data)."""
    return Path(__file__).resolve().parent / "weights"


def shipped_students() -> list[str]:
    return sorted(p.name for p in weights_dir().glob("fewstep-*-student.safetensors"))


