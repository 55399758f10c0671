"""Asynchronous score distillation (ASD) with the "dmd" weighting, as TriplaneTurbo applies it to its
multi-view teacher (``richdreamer_mvdream_stablediffusion_asd_guidance.py``; methods.md §11).

For renders z (in the teacher's image space, −1..1) and one noise ε:

    x_t = √ᾱ_t z + √(1−ᾱ_t) ε,       t ~ U[t_min, t_max]
    x_t+ = √ᾱ_t+ z + √(1−ᾱ_t+) ε,    t+ = t + U(0,1) · plus_ratio · (t − t_min)      (t+ = t when plus_ratio = 0)
    first  = ε_u + s (ε_c − ε_u)  at t   (CFG scale s)
    second = ε_c                  at t+
    x̂0_first = (x_t − √(1−ᾱ_t) first) / √ᾱ_t,   x̂0_second likewise (with the t of the first, as the code)
    w = mean |z − x̂0_first|  (per image),   grad = (x̂0_second − x̂0_first) / (w + eps)
    L = ½ ‖z − sg(z − grad)‖²,   so  ∂L/∂z = z − (z − grad) = grad

The code sums L over pixels and divides by the number of views; we divide by views · objects, so L is per
object (its gradient is grad / (views · objects)). A descent step moves z by −grad, along
x̂0_first − x̂0_second: towards the CFG-guided estimate and away from the plain conditional one (a DMD-style
difference of two scores, normalised by DMD's mean-absolute-error weight).

The released code forms both "x̂0" from the clean z instead of x_t; x̂0_second − x̂0_first is the same
either way (x_t cancels) and only w differs. We use DMD's form (x̂0 from x_t), as the method describes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fewstep.nodes.zoo.multiview.models import Teacher


@dataclass(frozen=True)
class ASDLoss:
    """Args: CFG scale of the first prediction; plus_ratio (0 for the MV / SD teachers, 0.1 for RD);
    eps of the dmd weight; t range as fractions of the T timesteps (t_min ramps, see :func:`t_min_at`)."""

    cfg: float = 7.5
    plus_ratio: float = 0.0
    eps: float = 0.1
    max_step: float = 0.98

    def __post_init__(self) -> None:
        if self.cfg < 0 or self.plus_ratio < 0 or self.eps <= 0 or not 0 < self.max_step <= 1:
            raise ValueError(f"invalid ASD settings {self}")

    @torch.no_grad()
    def gradient(self, teacher: Teacher, z: torch.Tensor, text: torch.Tensor, camera: torch.Tensor,
                 t_min: float, generator: torch.Generator) -> torch.Tensor:
        """grad [N, 3, S, S] for renders z [N, 3, S, S], captions text [N, D] (one per render), cameras [N, 4]."""
        n_steps = len(teacher.alphas)
        lo, hi = int(t_min * n_steps), max(int(t_min * n_steps) + 1, int(self.max_step * n_steps))
        t = torch.randint(lo, hi, (z.shape[0],), generator=generator, device=z.device)
        t_plus = (t + torch.rand(t.shape, generator=generator, device=z.device) * self.plus_ratio * (t - lo)).long()
        t_plus = t_plus.clamp(max=n_steps - 1)
        noise = torch.randn(z.shape, generator=generator, device=z.device)
        ab = teacher.alphas.to(z.device)
        a, a_plus = ab[t].view(-1, 1, 1, 1), ab[t_plus].view(-1, 1, 1, 1)
        x_t, x_plus = a.sqrt() * z + (1 - a).sqrt() * noise, a_plus.sqrt() * z + (1 - a_plus).sqrt() * noise
        uncond = torch.zeros_like(text)
        if self.plus_ratio == 0:                             # t+ = t: the second is the conditional ε at t
            eps_c, eps_u = teacher.eps(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text, uncond]),
                                       camera.repeat(2, 1)).chunk(2)
            eps_second = eps_c
        else:
            eps_c, eps_u, eps_second = teacher.eps(torch.cat([x_t, x_t, x_plus]), torch.cat([t, t, t_plus]),
                                                   torch.cat([text, uncond, text]), camera.repeat(3, 1)).chunk(3)
        first = eps_u + self.cfg * (eps_c - eps_u)
        return dmd_gradient(z, x_t, a, first, eps_second, self.eps)

    def __call__(self, z: torch.Tensor, grad: torch.Tensor, objects: int, views: int) -> torch.Tensor:
        """½ ‖z − sg(z − grad)‖² summed, / (objects · views): its gradient w.r.t. z is grad / (objects · views)."""
        target = (z - grad).detach()
        return 0.5 * (z - target).pow(2).sum() / (objects * views)


def dmd_gradient(z: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                 eps: float) -> torch.Tensor:
    """grad = (x̂0_second − x̂0_first) / (mean|z − x̂0_first| + eps), x̂0 from ε at ᾱ = a (module docstring)."""
    x0_first = (x_t - (1 - a).sqrt() * first) / a.sqrt()
    x0_second = (x_t - (1 - a).sqrt() * second) / a.sqrt()
    w = (z - x0_first).abs().mean(dim=(1, 2, 3), keepdim=True)
    return torch.nan_to_num((x0_second - x0_first) / (w + eps))


def t_min_at(progress: float, start: float = 0.5, end: float = 0.02) -> float:
    """min_step_percent ramped linearly from ``start`` to ``end`` over training (progress 0 → 1)."""
    return start + (end - start) * min(max(progress, 0.0), 1.0)
