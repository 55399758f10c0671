"""Shipped PRD weights (``weights/``): the triplane generator, a safetensors file with a JSON config beside
it. The teacher it was distilled from is the zoo's built-in multi-view teacher (``nodes.zoo.multiview``)."""

from __future__ import annotations

from pathlib import Path

import torch

from fewstep.nodes.zoo.multiview.builtin import read_weights

GENERATOR_FILE = "prd-triplane-generator.safetensors"
GENERATOR_RECIPE = "python -m fewstep.nodes.prd.recipe"


def weights_dir() -> Path:
    return Path(__file__).resolve().parent / "weights"


def read_generator(root: Path | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(fp32 state, config) of the shipped generator in ``root`` (default: the pack's ``weights/``)."""
    return read_weights((root or weights_dir()) / GENERATOR_FILE, GENERATOR_RECIPE)
