"""Guiders: a denoiser plus its conditioning, itself callable as ``D(x, sigma, cond=None) -> x0``.

A guider has the denoiser interface (``__call__`` and ``schedule``), so any sampler runs on it.
"""

from __future__ import annotations

from typing import Any

import torch

from fewstep.nodes.core.denoiser import Denoiser


def _cat_cond(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """Batch two model conds along dim 0 when every tensor has a matching shape, else None."""
    if a.keys() != b.keys():
        return None
    out: dict[str, Any] = {}
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor):
            if va.shape[1:] != vb.shape[1:]:
                return None
            out[key] = torch.cat([va, vb])
        elif isinstance(va, dict) and isinstance(vb, dict):
            sub = _cat_cond(va, vb)
            if sub is None:
                return None
            out[key] = sub
        elif va is None and vb is None:
            out[key] = None
        else:
            return None
    return out


def expand_cond(cond: Any, batch: int) -> Any:
    """Repeat batch-1 tensors of a model cond dict to ``batch`` rows (one prompt, many latents)."""
    if isinstance(cond, torch.Tensor):
        return cond.expand(batch, *cond.shape[1:]) if cond.shape[0] == 1 and batch > 1 else cond
    if isinstance(cond, dict):
        return {key: expand_cond(value, batch) for key, value in cond.items()}
    return cond


class BasicGuider:
    """No guidance: ``D(x, sigma, positive)``."""

    def __init__(self, denoiser: Denoiser, positive: Any) -> None:
        self.denoiser = denoiser
        self.positive = positive

    @property
    def schedule(self) -> Any:
        return self.denoiser.schedule

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Any = None) -> torch.Tensor:
        return self.denoiser(x, sigma, self.positive)

    def predict_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor | float,
                            cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, x0): without a negative prompt the unconditional prediction is the prediction itself, so the
        CFG++ samplers reduce to their base samplers (ComfyUI passes zeros there, a degenerate x0)."""
        x0 = self(x, sigma, cond)
        return x0, x0


class CFGGuider(BasicGuider):
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6, applied to x0, which is equivalent to eps
    for a fixed x and sigma): ``D = D(x, u) + scale (D(x, c) - D(x, u))``.

    scale == 1 skips the unconditional pass (ComfyUI does the same). Both passes run as one batch of
    2B when the two conds have matching shapes.
    """

    def __init__(self, denoiser: Denoiser, positive: Any, negative: Any, scale: float) -> None:
        super().__init__(denoiser, positive)
        self.negative = negative
        self.scale = float(scale)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Any = None) -> torch.Tensor:
        if self.scale == 1.0 or self.negative is None:
            return self.denoiser(x, sigma, self.positive)
        x_c, x_u = self._both(x, sigma)
        return x_u + self.scale * (x_c - x_u)

    def predict_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor | float,
                            cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(guided x0, unconditional x0) for the CFG++ samplers. The negative pass runs even at scale 1
        (ComfyUI's CFG++ samplers turn its cfg-1 shortcut off the same way)."""
        if self.negative is None:
            x0 = self.denoiser(x, sigma, self.positive)
            return x0, x0
        x_c, x_u = self._both(x, sigma)
        return x_u + self.scale * (x_c - x_u), x_u

    def _both(self, x: torch.Tensor, sigma: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(D(x, c), D(x, u)), as one batch of 2B when the two conds have matching shapes."""
        positive = expand_cond(self.positive, x.shape[0])
        negative = expand_cond(self.negative, x.shape[0])
        both = _cat_cond(positive, negative)
        if both is None:
            return self.denoiser(x, sigma, positive), self.denoiser(x, sigma, negative)
        sig = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sig = sig.expand(x.shape[0]) if sig.numel() == 1 else sig
        x_c, x_u = self.denoiser(torch.cat([x, x]), torch.cat([sig, sig]), both).chunk(2)
        return x_c, x_u
