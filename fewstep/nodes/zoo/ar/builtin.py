"""Saving and loading the built-in AR models: ``fewstep-tiny-vq``, ``fewstep-tiny-ar``, ``fewstep-tiny-mar``.

Each model is a safetensors file (fp16 weights; the tokenizer in fp32, it is tiny) plus a JSON file beside
it holding ``{"kind", "config", ...}``; ``load_*`` rebuild the module from the config and load strictly.
The training driver (``bench/zoo/ar_gpu_run.py``) writes the same files, so ``root=<its output folder>``
loads a fresh run exactly like the shipped weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .models import ARConfig, ARTransformer, MARConfig, MARModel
from .tokenizer import VQConfig, VQTokenizer

VQ_FILE = "fewstep-tiny-vq.safetensors"
AR_FILE = "fewstep-tiny-ar.safetensors"
MAR_FILE = "fewstep-tiny-mar.safetensors"
KINDS: dict[str, str] = {"vq": VQ_FILE, "ar": AR_FILE, "mar": MAR_FILE}


def weights_dir() -> Path:
    """The zoo's shipped weights folder."""
    return Path(__file__).resolve().parent.parent / "weights"


def save_model(module: torch.nn.Module, kind: str, folder: str | Path, extra: dict[str, object] | None = None,
               *, half: bool = True) -> Path:
    """Write ``module`` (a VQTokenizer / ARTransformer / MARModel) as ``KINDS[kind]`` into ``folder``."""
    from safetensors.torch import save_file

    if kind not in KINDS:
        raise ValueError(f"save_model: kind must be one of {sorted(KINDS)}, got {kind!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and kind != "vq" and v.is_floating_point() else v.float() if v.is_floating_point()
                 else v).detach().cpu().contiguous() for k, v in module.state_dict().items()}
    path = folder / KINDS[kind]
    save_file(state, str(path))
    meta = {"kind": kind, "config": module.config.to_dict(), **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return path


def _read(kind: str, root: str | Path | None) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    path = Path(root or weights_dir()) / KINDS[kind]
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"built-in AR model {path.name}: {path} or {meta_path.name} is missing (train it with "
                                "`python -m fewstep.bench.zoo.ar_gpu_run --out DIR` and copy DIR's files there)")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != kind:
        raise ValueError(f"{meta_path}: kind {meta.get('kind')!r}, expected {kind!r}")
    return {k: v.float() for k, v in load_file(str(path)).items()}, meta


def load_tokenizer(root: str | Path | None = None, device: torch.device | str = "cpu") -> VQTokenizer:
    """The VQ tokenizer (fp32)."""
    state, meta = _read("vq", root)
    tok = VQTokenizer(VQConfig(**meta["config"]))
    tok.load_state_dict(state, strict=True)
    return tok.to(device).eval()


def load_ar(root: str | Path | None = None, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> ARTransformer:
    """The AR transformer, eval mode, no gradients."""
    state, meta = _read("ar", root)
    model = ARTransformer(ARConfig(**meta["config"]))
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_mar(root: str | Path | None = None, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> MARModel:
    """The MAR model, eval mode, no gradients."""
    state, meta = _read("mar", root)
    model = MARModel(MARConfig(**meta["config"]))
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def read_meta(kind: str, root: str | Path | None = None) -> dict:
    """The JSON beside a model file (config, training report)."""
    return _read(kind, root)[1]


def available(root: str | Path | None = None) -> list[str]:
    """Which of ``vq``, ``ar``, ``mar`` are present in ``root`` (default: the shipped weights)."""
    folder = Path(root or weights_dir())
    return [k for k, f in KINDS.items() if (folder / f).is_file() and (folder / f).with_suffix(".json").is_file()]
