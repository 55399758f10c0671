"""Reading weight files safely, and the model cache hook.

- ``.safetensors`` are read with the safetensors library; a truncated or corrupt file is a
  :class:`ModelFileError` naming the file.
- Pickle checkpoints (``.ckpt``, ``.pt``, ``.pth``, ``.bin``) can run code when unpickled: they are refused
  unless the caller opts in (``allow_pickle=True``, the ``FEWSTEP_ALLOW_PICKLE=1`` environment variable),
  and then read with ``torch.load(weights_only=True)`` (tensors and plain containers only).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)


class ModelFileError(ValueError):
    """A model file that cannot be used (corrupt, truncated, refused pickle, unknown layout)."""


def pickle_allowed(allow_pickle: bool | None = None) -> bool:
    """The explicit opt-in: the argument, else the FEWSTEP_ALLOW_PICKLE environment variable."""
    if allow_pickle is not None:
        return allow_pickle
    return os.environ.get("FEWSTEP_ALLOW_PICKLE", "") in ("1", "true", "yes")


def _check_safetensors_header(path: Path) -> None:
    """Validate the 8-byte header length and the JSON header against the file size before reading."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or 8 + n > size:
            raise ModelFileError(f"{path}: corrupt or truncated safetensors file (header of {n} bytes, file "
                                 f"of {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError) as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ModelFileError(f"{path}: corrupt safetensors header ({type(exc).__name__})") from exc
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
        # a header of the wrong shape (a list, an entry without data_offsets) raised raw, unnamed
        raise ModelFileError(f"{path}: malformed safetensors header ({type(exc).__name__}: {exc})") from exc
    if 8 + n + end > size:
        raise ModelFileError(f"{path}: truncated safetensors file: tensors need {8 + n + end} bytes, the file "
                             f"has {size} (an interrupted download?)")


def read_state_dict(path: str | Path, *, allow_pickle: bool | None = None, device: str = "cpu") -> dict[str, Any]:
    """All tensors of a weight file, by name. Clear errors name the file.

    Args:
        path: a ``.safetensors`` file or (with the opt-in) a pickle checkpoint.
        allow_pickle: opt in to pickle files (read with ``weights_only=True``); None reads the environment.
        device: where the tensors are placed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        _check_safetensors_header(path)
        try:
            return load_file(str(path), device=device)
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise ModelFileError(f"{path}: cannot read safetensors file: {exc}") from exc
    if suffix in PICKLE_SUFFIXES:
        return _read_pickle(path, allow_pickle, device)
    raise ModelFileError(f"{path}: unknown weight file type {suffix!r} (expected one of {WEIGHT_SUFFIXES})")


def _read_pickle(path: Path, allow_pickle: bool | None, device: str) -> dict[str, Any]:
    if not pickle_allowed(allow_pickle):
        raise ModelFileError(
            f"{path}: refusing to load a pickle checkpoint ({path.suffix}); pickle files can run arbitrary "
            "code. Convert it to .safetensors, or opt in explicitly with FEWSTEP_ALLOW_PICKLE=1 (it is then "
            "read with torch.load(weights_only=True)).")
    import pickle

    import torch

    try:
        data = torch.load(str(path), map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ModelFileError(f"{path}: cannot read pickle checkpoint with weights_only=True: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]                       # Lightning / LDM checkpoints wrap the weights
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def cached(path: str | Path, dtype: Any, device: Any, loader: Callable[[], Any]) -> Any:
    """Load through the engine's model cache (keyed by file + dtype + device) when running inside the
    executor; outside it (library use, tests) just load."""
    from fewstep.app.api import current_context

    context = current_context()
    cache = context.extra.get("model_cache") if context is not None else None
    if cache is None:
        return loader()
    return cache.get_or_load(path, dtype, device, loader)
