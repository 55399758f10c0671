"""Moving trainer and student UNets between devices and dtypes."""

from __future__ import annotations

import torch
from torch import nn


def place(module: nn.Module, device: str | torch.device, dtype: torch.dtype) -> nn.Module:
    """``module`` on ``device`` in ``dtype``, cast only when its dtype differs.

    diffusers' ``ModelMixin.to`` warns "should be kept in float32: []" whenever a dtype is passed, even a
    float32 model to float32 with an empty list; our UNets are built and loaded in float32, so on CPU the
    cast was a no-op that printed the warning 2-6 times per TDM/PSO run.
    """
    module = module.to(device=device)
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype=dtype)
    return module
