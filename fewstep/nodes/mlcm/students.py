"""The shipped students of the built-in teacher (LCM, MLCM stage 1 + 2, SLAM): their file format and loading.

Each student is a LoRA (peft, rank 16) on the teacher UNet, shipped as ``<name>.safetensors`` holding the
adapter tensors (fp16) plus "override" tensors (SLAM: the time-embedding bias with γ = 1 folded in), its recipe
in the ``fewstep`` metadata; the format and its loader (``load_student``) are ``nodes.core.train.builtin``'s.
Training them (recipes, export, the one command) is ``bench/mlcm/students.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fewstep.nodes.core.train.builtin import shipped_student_model

if TYPE_CHECKING:
    from fewstep.nodes.core.denoiser import Denoiser
    from fewstep.nodes.core.text import TextEncoder
    from fewstep.nodes.core.vae import VAEWrapper

LORA_RANK = 16


def weights_dir() -> Path:
    """Where the shipped students live (package data)."""
    return Path(__file__).resolve().parent / "weights"


def shipped_students() -> list[str]:
    """File names of the shipped students."""
    return sorted(p.name for p in weights_dir().glob("fewstep-*-student.safetensors"))


def load_student_model(name: str) -> tuple[Denoiser, TextEncoder, VAEWrapper]:
    """(MODEL, CLIP, VAE): a shipped student on the built-in teacher's device, with the teacher's CLIP and VAE."""
    if name not in shipped_students():
        raise ValueError(f"unknown student {name!r}; shipped: {shipped_students()}")
    return shipped_student_model(weights_dir() / name)
