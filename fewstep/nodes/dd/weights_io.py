"""The shipped DD generators (``fewstep/nodes/dd/weights``: fp16 safetensors + JSON + model card)."""

from __future__ import annotations

from pathlib import Path

from fewstep.nodes.dd.generator import DDGenerator
from fewstep.nodes.dd.train import load_generator

DEFAULT_GENERATOR = "fewstep-dd-tiny-ar.safetensors"


def weights_dir() -> Path:
    return Path(__file__).resolve().parent / "weights"


def shipped_generators() -> list[str]:
    """File names of the generators in ``weights/`` (each with its JSON beside it)."""
    folder = weights_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.glob("*.safetensors") if p.with_suffix(".json").is_file())


def load_shipped_generator(path: Path | str | None = None, device: str = "cpu") -> tuple[DDGenerator, dict[str, object]]:
    """A shipped generator by file name (default ``fewstep-dd-tiny-ar``) or a generator file by path."""
    if path is None or (isinstance(path, str) and "/" not in path):
        name = DEFAULT_GENERATOR if path is None else path
        if name not in shipped_generators():
            raise ValueError(f"unknown DD generator {name!r}; shipped: {shipped_generators()}")
        path = weights_dir() / name
    return load_generator(path, device)
