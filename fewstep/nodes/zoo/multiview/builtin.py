"""Saving and loading the built-in multi-view teacher and its caption probe (``fewstep-tiny-mv-teacher``,
``fewstep-tiny-mv-probe`` in ``nodes/zoo/weights``), plus the caption embedder they were trained with.

Each model is a safetensors file with a JSON config beside it. The recipe (``nodes.zoo.multiview.train``)
writes the same files, so ``root=<its output folder>`` loads a fresh run exactly like the shipped weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from fewstep.nodes.zoo.multiview.evaluate import CaptionProbe
from fewstep.nodes.zoo.multiview.models import MVUNet, Teacher, TeacherConfig, make_teacher

TEACHER_FILE = "fewstep-tiny-mv-teacher.safetensors"
PROBE_FILE = "fewstep-tiny-mv-probe.safetensors"
TEACHER_RECIPE = "python -m fewstep.nodes.zoo.multiview.train"   # trains both (see the model cards)


def weights_dir() -> Path:
    """The zoo's shipped weights folder."""
    return Path(__file__).resolve().parent.parent / "weights"


def save_weights(module: torch.nn.Module, path: Path, config: dict, half: bool = False) -> None:
    """State dict (fp16 when ``half``) as ``path`` (safetensors) + ``config`` as ``<name>.json`` beside it."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))
    path.with_suffix(".json").write_text(json.dumps(config, indent=1, sort_keys=True))


def read_weights(path: Path, recipe: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(fp32 state dict, JSON config) of ``path``; ``recipe`` is the command that trains it (named in the error)."""
    from safetensors.torch import load_file

    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise FileNotFoundError(f"weights {path} (or its .json) are missing: train them with `{recipe}`")
    return {k: v.float() for k, v in load_file(str(path)).items()}, json.loads(path.with_suffix(".json").read_text())



def load_teacher(root: Path | None = None) -> Teacher:
    """The shipped teacher (frozen, fp32, CPU) from ``root`` (default: the zoo's weights)."""
    state, config = read_weights((root or weights_dir()) / TEACHER_FILE, TEACHER_RECIPE)
    unet = MVUNet(TeacherConfig.from_dict(config["unet"]))
    unet.load_state_dict(state)
    return make_teacher(unet)


def load_probe(root: Path | None = None) -> CaptionProbe:
    """The shipped caption probe (frozen) from ``root`` (default: the zoo's weights)."""
    state, _ = read_weights((root or weights_dir()) / PROBE_FILE, TEACHER_RECIPE)
    probe = CaptionProbe()
    probe.load_state_dict(state)
    return probe.eval().requires_grad_(False)


class CaptionEmbedder:
    """Captions → pooled all-MiniLM-L6-v2 embeddings [N, 384] (unit norm), cached per caption."""

    def __init__(self) -> None:
        from fewstep.nodes.zoo.lean import load_minilm

        self.encoder = load_minilm()
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            _, pooled = self.encoder.encode(missing)
            self.cache.update({c: p.float() for c, p in zip(missing, pooled, strict=True)})
        return torch.stack([self.cache[c] for c in captions])


@dataclass(frozen=True, eq=False)
class MultiviewTeacher:
    """What the loader node hands on: the camera-conditioned teacher, the caption embedder it was trained
    with, and a name (the weights file; distillation runs fingerprint it)."""

    teacher: Teacher
    embed: CaptionEmbedder
    name: str


def load_multiview_teacher(root: Path | None = None) -> MultiviewTeacher:
    return MultiviewTeacher(load_teacher(root), CaptionEmbedder(), TEACHER_FILE)
