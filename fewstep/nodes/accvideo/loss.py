"""AccVideo's two losses and the pieces they need (paper §4.2-4.3, Alg. 1).

Notation (paper): key timesteps ``t'_m = 1 > ... > t'_0 = 0`` (``keypoints``), ``l_{t'}`` a latent clip at
``t'``, ``s_β(l, t')`` the student's velocity (rectified flow, ``v = dl/dt' = ε - x0``).

1. Trajectory-based few-step guidance (paper eq. 5)::

       L_traj = E || s_β(l_{t'_{k+1}}, t'_{k+1}) - (l_{t'_k} - l_{t'_{k+1}}) / (t'_k - t'_{k+1}) ||²

   the velocity whose single Euler step ``l_{t'_{k+1}} + (t'_k - t'_{k+1}) s`` lands on the teacher's next key
   point (the secant of the teacher's trajectory between two key points).

2. Adversarial training at each key timestep (paper eq. 6-7)::

       D(l, t'_k) = H_k( φ(l, t'_k) )
       L_adv = E_k [ log D(l^real_{t'_k}, t'_k) + log(1 - D(l^gen_{t'_k}, t'_k)) ]

   ``φ`` is the frozen teacher used as a feature extractor: its last block's tokens for ``t'_k > 0``, an
   earlier block's (HunyuanVideo: 40th of 60, here the block at 2/3 of the depth) for ``t'_0 = 0``; ``H_k`` is
   a small 2-D conv head per key timestep (timestep-aware), or one head shared by all (the ablation). The
   heads maximise L_adv (binary cross-entropy, real = 1); the student minimises the non-saturating form
   ``-log D(l^gen)`` (Goodfellow et al. 2014, §3), the usual choice for the generator side. Real points are
   SynVid's key points; nothing is forward-diffused on either side.

3. Generated latents come from queues instead of full rollouts (Alg. 1): ``Q_m`` holds fresh noise; for
   k = m-1 ... 0 a batch ``l^gen_{t'_{k+1}}`` is popped from ``Q_{k+1}``, moved by ONE student Euler step to
   ``t'_k`` and pushed to ``Q_k`` (:class:`LatentQueues`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# velocity(x [B,T,C,h,w], t' [B] in 0..1, prompt ids [B]) -> v [B,T,C,h,w]
VelocityFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def secant_velocity(x_hi: Tensor, x_lo: Tensor, t_hi: float, t_lo: float) -> Tensor:
    """``(l_{t'_k} - l_{t'_{k+1}}) / (t'_k - t'_{k+1})``: the constant velocity from ``x_hi`` (at ``t_hi``) to ``x_lo``."""
    if t_hi == t_lo:
        raise ValueError("secant_velocity: the two key points have the same timestep")
    return (x_lo - x_hi) / (t_lo - t_hi)


def euler_step(x: Tensor, v: Tensor, t_from: float, t_to: float) -> Tensor:
    """One flow-Euler step ``x + (t_to - t_from) v`` (core ``sample_flow_euler``'s update)."""
    return x + (t_to - t_from) * v


def trajectory_loss(v_pred: Tensor, x_hi: Tensor, x_lo: Tensor, t_hi: float, t_lo: float) -> Tensor:
    """L_traj (paper eq. 5), mean over elements: the student's velocity at ``x_hi`` against the secant."""
    return F.mse_loss(v_pred.float(), secant_velocity(x_hi.float(), x_lo.float(), t_hi, t_lo))


# ----------------------------------------------------------------------------------------------- discriminator
def feature_blocks(depth: int) -> tuple[int, int]:
    """(block for t' > 0, block for t' = 0): the last block, and the one at 2/3 of the depth (60 -> 40)."""
    return depth - 1, max(0, round(depth * 40 / 60) - 1)


class TeacherFeatures:
    """The frozen teacher DiT as ``φ(l, t')``: the output tokens ``[B, N, D]`` of one of its blocks.

    The DiT is frozen here (eval, ``requires_grad_(False)``); gradients still flow to the INPUT latents, which
    is how the student receives the adversarial signal through the teacher."""

    def __init__(self, dit: nn.Module, context: Tensor, mask: Tensor) -> None:
        self.dit = dit.eval().requires_grad_(False)
        self.context, self.mask = context, mask                   # prompt table [P, L, 384], [P, L]
        self.late, self.early = feature_blocks(len(dit.blocks))

    def block_for(self, t: float) -> int:
        return self.early if t == 0.0 else self.late

    def __call__(self, x: Tensor, t: float, prompt_ids: Tensor) -> Tensor:
        store: list[Tensor] = []
        handle = self.dit.blocks[self.block_for(t)].register_forward_hook(lambda m, i, out: store.append(out))
        try:
            ts = torch.full((x.shape[0],), t * 1000.0, device=x.device)
            self.dit(x, ts, self.context[prompt_ids], self.mask[prompt_ids])
        finally:
            handle.remove()
        return store[0]                                           # [B, N, D], N = T * s * s tokens


class FeatureHead(nn.Module):
    """A small 2-D conv head on one frame's token grid: ``[B, T*s*s, D] -> logit [B]`` (mean over frames and
    positions of a per-position logit)."""

    def __init__(self, dim: int, side: int, width: int = 32) -> None:
        super().__init__()
        self.side = side
        self.net = nn.Sequential(nn.Conv2d(dim, width, 3, padding=1), nn.GroupNorm(4, width), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, 1, 1))

    def forward(self, tokens: Tensor) -> Tensor:
        b, n, d = tokens.shape
        s = self.side
        x = tokens.reshape(b, n // (s * s), s, s, d).permute(0, 1, 4, 2, 3).flatten(0, 1)   # [B*T, D, s, s]
        return self.net(x).reshape(b, -1).mean(1)                                          # [B]


class Discriminator(nn.Module):
    """The heads of ``D(l, t'_k) = H_k(φ(l, t'_k))``: one per generated key timestep k = 0..m-1
    (``per_timestep``) or one shared (``shared``)."""

    def __init__(self, dim: int, side: int, keys: int, mode: str, width: int = 32) -> None:
        super().__init__()
        if mode not in ("shared", "per_timestep"):
            raise ValueError(f"discriminator mode must be 'shared' or 'per_timestep', got {mode!r}")
        self.mode = mode
        self.heads = nn.ModuleList(FeatureHead(dim, side, width) for _ in range(keys if mode == "per_timestep" else 1))

    def head(self, k: int) -> FeatureHead:
        return self.heads[k if self.mode == "per_timestep" else 0]


def frozen_call(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` with its parameters detached: gradients reach ``x`` only (the generator's side of a GAN)."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, (x,))


def adversarial_losses(head: nn.Module, f_real: Tensor, f_gen: Tensor) -> tuple[Tensor, Tensor]:
    """(head loss, student loss) of one key timestep, split so one backward trains each side on its own loss.

    head loss  = -[log D(real) + log(1 - D(gen))] = softplus(-d_real) + softplus(d_gen), gen features detached;
    student    = -log D(gen) = softplus(-d_gen) through detached head weights (non-saturating generator loss)."""
    d_real, d_gen = head(f_real.detach()), head(f_gen.detach())
    head_loss = (F.softplus(-d_real) + F.softplus(d_gen)).mean()
    student_loss = F.softplus(-frozen_call(head, f_gen)).mean()
    return head_loss, student_loss


# ----------------------------------------------------------------------------------------------- queues
@dataclass
class LatentQueues:
    """``Q_0 .. Q_m`` of (latents ``[B, T, C, h, w]``, prompt ids ``[B]``) batches, FIFO, ``capacity`` batches
    each (the oldest is dropped when full). ``Q_m`` receives fresh noise; the student's one-step moves fill the
    others (Alg. 1)."""

    m: int
    capacity: int = 1
    queues: dict[int, deque] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.queues = {k: deque(maxlen=self.capacity) for k in range(self.m + 1)}

    def push(self, k: int, latents: Tensor, prompt_ids: Tensor) -> None:
        self.queues[k].append((latents.detach(), prompt_ids))

    def pop(self, k: int) -> tuple[Tensor, Tensor] | None:
        return self.queues[k].popleft() if self.queues[k] else None

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())
