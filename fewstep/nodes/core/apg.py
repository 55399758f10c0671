"""Adaptive projected guidance (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High
Guidance Scales in Diffusion Models", Algorithm 1) in the form of ComfyUI's ``APG`` node: a pre-CFG step that
rewrites the conditional x0 prediction before the CFG combination.

With D_c, D_u the conditional / unconditional x0 predictions and s the CFG scale, at every model call:

    g   = D_c - D_u                                     (the CFG update)
    g   = beta avg + g;  avg <- g                      (momentum beta != 0: a running sum over the sampling,
                                                        restarted whenever sigma goes up; the paper's
                                                        "reverse momentum" is beta < 0)
    g   = g min(1, r / ||g||)                          (norm_threshold r > 0; L2 over C, H, W per sample)
    g_par = <g, D_c/||D_c||> D_c/||D_c||,  g_orth = g - g_par
    g'  = g_orth + eta g_par
    D_c' = D_u + g' + (D_c - D_u) / s

and the usual CFG D_u + s (D_c' - D_u) then gives D_c + s g'. (ComfyUI's formula; the paper's is
D_c + (s - 1) g'.) At eta 1 with no threshold and no momentum this is CFG
at scale s + 1.

Where ComfyUI runs its cfg-1 shortcut (cfg == 1, or a guider without a negative prompt), the unconditional
prediction it passes here is zeros, and APG still applies; this module does the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class APGSettings:
    """The APG node's inputs (kept in the MODEL's ``extras["apg"]``).

    Args:
        eta: weight of the guidance component parallel to D_c (1 keeps it, 0 removes it).
        norm_threshold: the guidance update's L2 norm is clipped to this (0 = no clipping).
        momentum: running-average coefficient of the guidance update (0 = off; negative values push away
            from the previous updates).
    """

    eta: float = 1.0
    norm_threshold: float = 5.0
    momentum: float = 0.0


def project(v: torch.Tensor, onto: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(parallel, orthogonal) parts of v [B, C, H, W] relative to ``onto``, per sample over (C, H, W)."""
    dims = (-1, -2, -3)
    unit = torch.nn.functional.normalize(onto, dim=dims)
    parallel = (v * unit).sum(dim=dims, keepdim=True) * unit
    return parallel, v - parallel


@dataclass
class APGState:
    """APG for one sampling run: the settings plus the momentum's running sum (restarted when sigma rises)."""

    settings: APGSettings
    running: torch.Tensor | None = field(default=None, repr=False)
    prev_sigma: float | None = None

    def modified_cond(self, cond: torch.Tensor, uncond: torch.Tensor, sigma: torch.Tensor | float,
                      scale: float) -> torch.Tensor:
        """D_c' for the CFG combination (module docstring); ``cond`` / ``uncond`` are x0 [B, C, H, W]."""
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        if self.prev_sigma is not None and s > self.prev_sigma:
            self.running = None
        self.prev_sigma = s
        opts = self.settings
        guidance = cond - uncond
        if opts.momentum != 0:
            self.running = guidance if self.running is None else opts.momentum * self.running + guidance
            guidance = self.running
        if opts.norm_threshold > 0:
            norm = guidance.norm(p=2, dim=(-1, -2, -3), keepdim=True)
            guidance = guidance * torch.minimum(torch.ones_like(norm), opts.norm_threshold / norm)
        parallel, orthogonal = project(guidance, cond)
        return uncond + (orthogonal + opts.eta * parallel) + (cond - uncond) / scale
