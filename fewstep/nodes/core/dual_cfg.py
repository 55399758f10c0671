"""Guidance with two prompts and a negative one (ComfyUI's ``DualCFGGuider``), over any CONDITIONING (areas,
masks, ControlNets: ``nodes.core.conditioning.evaluate``).

With D_1, D_2, D_n the x0 predictions for cond1, cond2 and the negative prompt, s_1 = cfg_conds and
s_2 = cfg_cond2_negative:

- ``regular``: D = D_n + s_2 (D_2 - D_n) + s_1 (D_1 - D_2); CFG from the negative to cond2, plus cond1's
  difference to cond2 scaled separately. At s_2 = 1 the negative pass is skipped, at s_1 = s_2 = 1 the cond2
  pass as well (their weights are then 0), as ComfyUI does.
- ``nested``: D = D_n + s_2 (D_12 - D_n) with D_12 = D_2 + s_1 (D_1 - D_2); CFG inside CFG.

The inner CFG combination (D_2 against D_n in ``regular``, D_1 against D_2 in ``nested``) is ComfyUI's
``cfg_function``, so RescaleCFG applies there. cond2 is marked a negative prompt (``prompt_type``), which the
SDXL refiner reads (aesthetic score 2.5). APG does not act here: ComfyUI runs its pre-CFG hooks only in the
single-CFG guiders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fewstep.nodes.core.conditioning import _share_control, cfg_combine, evaluate, prepare

Conditioning = list[list[Any]]


@dataclass(frozen=True)
class DualCFGGuiderSpec:
    """The GUIDER link value of DualCFGGuider; built per latent shape like ``sampling.GuiderSpec``."""

    model: Any
    cond1: Conditioning
    cond2: Conditioning
    negative: Conditioning
    cfg_conds: float = 8.0
    cfg_cond2_negative: float = 8.0
    nested: bool = False

    def build(self, latent: torch.Tensor) -> DualCFGGuider:
        return DualCFGGuider(self, latent)


class DualCFGGuider:
    """The built guider: ``D(x, sigma) -> x0`` (module docstring). It exposes ``model`` (not ``denoiser``),
    so the CUDA fast path leaves it eager."""

    def __init__(self, spec: DualCFGGuiderSpec, latent: torch.Tensor) -> None:
        h, w = latent.shape[-2:]
        schedule = spec.model.schedule
        self.model = spec.model
        self.spec = spec
        self.cond1 = prepare(spec.cond1, h, w, schedule)
        self.cond2 = prepare([[c, {**e, "prompt_type": "negative"}] for c, e in spec.cond2], h, w, schedule)
        self.negative = prepare([[c, {"prompt_type": "negative", **e}] for c, e in spec.negative], h, w, schedule)
        _share_control(self.cond1, self.negative)

    @property
    def schedule(self) -> Any:
        return self.model.schedule

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Any = None) -> torch.Tensor:
        s1, s2 = float(self.spec.cfg_conds), float(self.spec.cfg_cond2_negative)
        if self.spec.nested or s2 != 1.0:
            return self.predict_with_uncond(x, sigma, cond)[0]
        # regular at s2 = 1: D_2 + s1 (D_1 - D_2), and D_1 alone when s1 = 1 too
        x0_1 = evaluate(self.model, self.cond1, x, sigma)
        if s1 == 1.0:
            return x0_1
        x0_2 = evaluate(self.model, self.cond2, x, sigma)
        return x0_2 + (x0_1 - x0_2) * s1            # CFG (or RescaleCFG) at scale 1 is D_2 itself

    def predict_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor | float,
                            cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(guided x0, the unconditional x0 of the inner CFG step) for the CFG++ samplers: D_n in ``regular``,
        D_2 in ``nested`` (what ComfyUI's post-CFG hook sees); every pass runs."""
        s1, s2 = float(self.spec.cfg_conds), float(self.spec.cfg_cond2_negative)
        x0_n = evaluate(self.model, self.negative, x, sigma)
        x0_2 = evaluate(self.model, self.cond2, x, sigma)
        x0_1 = evaluate(self.model, self.cond1, x, sigma)
        if self.spec.nested:
            inner = cfg_combine(self.model, x, sigma, x0_1, x0_2, s1)
            return x0_n + s2 * (inner - x0_n), x0_2
        return cfg_combine(self.model, x, sigma, x0_2, x0_n, s2) + (x0_1 - x0_2) * s1, x0_n
