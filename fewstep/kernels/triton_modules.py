"""Lazy, cached imports of the Triton kernel modules of ``fewstep/kernels/``.

Each op module (``kernels.groupnorm``, ``geglu``, ``layernorm``, ``residual``, ``lowbit``) keeps its PyTorch
reference importable without Triton and asks for its kernel module here at the first GPU call; a machine where
Triton does not import gets None and the ops fall back to their references.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch


@functools.cache
def load(name: str) -> ModuleType | None:
    """``kernels.<name>`` (e.g. "geglu_triton"), or None when it cannot be imported here."""
    try:
        return importlib.import_module(f"fewstep.kernels.{name}")
    except Exception:  # noqa: BLE001 - any import failure means "no Triton here"
        return None


def runs_on(name: str, device: torch.device) -> bool:
    """Whether ``kernels.<name>`` can launch on ``device``: CUDA, or the CPU under ``TRITON_INTERPRET=1``."""
    return load(name) is not None and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")
