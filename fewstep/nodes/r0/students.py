"""The shipped R0 students of the built-in teacher: file names, metadata and loading.

A student is a LoRA (peft, rank 16, TLCM's target modules) on the teacher UNet, saved as
``fewstep-r0-<arm>-student.safetensors`` (fp16 adapter tensors; metadata ``fewstep`` = its recipe) in the
format of ``nodes.mlcm.students`` so ``load_student`` merges it into a plain UNet. Training an arm (the one
command, export, reports) is ``bench/r0/students.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn


def weights_dir() -> Path:
    """Where the shipped students live (package data)."""
    return Path(__file__).resolve().parent / "weights"


def student_file(name: str) -> str:
    return f"fewstep-r0-{name.replace('_', '-')}-student.safetensors"


def shipped_students() -> list[str]:
    """File names of the shipped R0 students."""
    return sorted(p.name for p in weights_dir().glob("fewstep-r0-*-student.safetensors"))


def student_meta(path: str | Path) -> dict[str, Any]:
    """The recipe stored in a student file (timesteps, guidance, eta, config)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["fewstep"])


def load_student(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """A plain UNet (teacher + merged LoRA) from a student file (the format of ``nodes.core.train.builtin``)."""
    from fewstep.nodes.core.train.builtin import load_student as load_merged

    return load_merged(path, device, dtype)


def load_student_model(name: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(MODEL, CLIP, VAE, recipe) of a shipped student, with the built-in teacher's CLIP and VAE."""
    from fewstep.app.api import cached_model
    from fewstep.nodes.core.loaders import list_builtin, load_checkpoint
    from fewstep.nodes.core.train.adapter import student_model, unet_of

    if name not in shipped_students():
        raise ValueError(f"unknown R0 student {name!r}; shipped: {shipped_students()}")
    teacher, clip, vae = load_checkpoint(list_builtin()[0])
    p = next(unet_of(teacher).parameters())
    path = weights_dir() / name
    unet = cached_model(path, p.dtype, p.device, lambda: load_student(path, str(p.device), p.dtype))
    return student_model(teacher, unet, name), clip, vae, student_meta(path)
