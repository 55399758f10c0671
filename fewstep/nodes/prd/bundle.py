"""Shipped PRD weights (``weights/``): the multi-view teacher, the caption probe and the triplane generator,
each a safetensors file with a JSON config beside it; plus the caption embedder (MiniLM, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fewstep.nodes.prd.probe import CaptionProbe
from fewstep.nodes.prd.teacher import MVUNet, Teacher, TeacherConfig, make_teacher

TEACHER_FILE = "prd-mv-teacher.safetensors"
PROBE_FILE = "prd-caption-probe.safetensors"
GENERATOR_FILE = "prd-triplane-generator.safetensors"


def weights_dir() -> Path:
    return Path(__file__).resolve().parent / "weights"


def save_weights(module: torch.nn.Module, path: Path, config: dict, half: bool = False) -> None:
    """State dict (fp16 when ``half``) + ``<name>.json`` config."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))
    path.with_suffix(".json").write_text(json.dumps(config, indent=1, sort_keys=True))


def read_weights(name: str, root: Path | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    path = (root or weights_dir()) / name
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise FileNotFoundError(f"PRD weights {path} (or its .json) are missing: train them with "
                                "`python -m fewstep.nodes.prd.recipe` (see the pack README)")
    return {k: v.float() for k, v in load_file(str(path)).items()}, json.loads(path.with_suffix(".json").read_text())


def load_teacher(root: Path | None = None) -> Teacher:
    state, config = read_weights(TEACHER_FILE, root)
    unet = MVUNet(TeacherConfig.from_dict(config["unet"]))
    unet.load_state_dict(state)
    return make_teacher(unet)


def load_probe(root: Path | None = None) -> CaptionProbe:
    state, _ = read_weights(PROBE_FILE, root)
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
