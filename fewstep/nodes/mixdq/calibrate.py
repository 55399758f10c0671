"""Calibration on the model's own few-step samples (MixDQ Sec. 5.1; Q-Diffusion-style PTQ).

A *runner* is ``runner(net) -> outputs``: the whole few-step sampling (fixed prompts, seeds and sigmas)
with ``net`` as the network, returning its final outputs [B, C, H, W] (images, or latents). Running it
once on the full-precision network records:

* every call of the network (its positional and keyword inputs and its output), for the SQNR probes;
* per quantizable layer: the input's absolute maximum (per-tensor min-max range), and for the
  cross-attention K/V projections also the maximum without the first text token (BOS-aware range);
* per layer: the number of input elements per call (the activation-size weights of the bit budget);
* the first text token's embedding on every call, to decide whether it can be precomputed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fewstep.nodes.mixdq.layers import is_bos_layer, quantizable_layers

Runner = Callable[[nn.Module], torch.Tensor]
BOS_CONSTANT_RTOL = 1e-3    # first-token rows within 0.1% of their max are "the same token" (CLIP: exact)


def main_tensor(out: Any) -> torch.Tensor:
    """The tensor of a network's output: a tensor, the first item of a tuple / list, or ``.sample``
    (diffusers output objects and namespaces)."""
    if torch.is_tensor(out):
        return out
    if isinstance(out, (tuple, list)):
        return out[0]
    sample = getattr(out, "sample", None)
    if not torch.is_tensor(sample):
        raise TypeError(f"cannot find the output tensor in a {type(out).__name__} (no tensor, tuple or .sample)")
    return sample


@dataclass
class Calibration:
    """What one full-precision run of the sampler tells the quantizer (see the module docstring)."""

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    call_outputs: list[torch.Tensor] = field(default_factory=list)
    fp_output: torch.Tensor | None = None
    absmax: dict[str, float] = field(default_factory=dict)
    absmax_no_bos: dict[str, float] = field(default_factory=dict)
    act_numel: dict[str, int] = field(default_factory=dict)
    bos_rows: list[torch.Tensor] = field(default_factory=list)

    def bos_embedding(self) -> torch.Tensor | None:
        """The first text token's embedding [D] when it is the same on every call, else None."""
        if not self.bos_rows:
            return None
        rows = torch.cat([r.float().reshape(-1, r.shape[-1]) for r in self.bos_rows])      # [n, D]
        spread = (rows - rows[:1]).abs().max()
        if spread <= BOS_CONSTANT_RTOL * rows.abs().max().clamp_min(1e-12):
            return rows[0].clone()
        return None


def _detach(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach()
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(v) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


def _layer_hook(calib: Calibration, name: str, bos_layer: bool) -> Callable[..., None]:
    def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        calib.absmax[name] = max(calib.absmax.get(name, 0.0), float(x.abs().max()))
        calib.act_numel.setdefault(name, x.numel() // max(x.shape[0], 1))
        if bos_layer and x.dim() == 3 and x.shape[1] > 1:
            rest = float(x[:, 1:].abs().max())                           # range without token 0
            calib.absmax_no_bos[name] = max(calib.absmax_no_bos.get(name, 0.0), rest)
            if not calib.bos_rows or len(calib.bos_rows) < 64:
                calib.bos_rows.append(x[:, 0].cpu())
    return hook


@torch.no_grad()
def calibrate(net: nn.Module, runner: Runner, *, keep_calls: bool = True) -> Calibration:
    """Run ``runner(net)`` once in full precision and record what quantization needs."""
    calib = Calibration()
    handles = []
    layers = quantizable_layers(net)
    if not layers:
        raise ValueError("calibrate: the network has no nn.Linear / nn.Conv2d layers to quantize")
    for name, layer in layers.items():
        handles.append(layer.register_forward_pre_hook(_layer_hook(calib, name, is_bos_layer(name))))

    def on_call(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if keep_calls:
            calib.calls.append((_detach(args), _detach(kwargs)))
            calib.call_outputs.append(main_tensor(out).detach())

    handles.append(net.register_forward_hook(on_call, with_kwargs=True))
    try:
        calib.fp_output = runner(net).detach()
    finally:
        for handle in handles:
            handle.remove()
    if not calib.call_outputs and keep_calls:
        raise RuntimeError("calibrate: the runner never called the network it was given")
    return calib
