"""Evaluating the multi-view teacher (and what is distilled from it): the caption probe, a small CNN that
names the colour and the shape of a primitive in a 16 x 16 render, and the teacher's probe accuracy.

Our stand-in for CLIP R@1 (TriplaneTurbo's Table 1, methods.md §11): a render "matches its caption" when the
probe reads back both the caption's colour and its shape. Trained on the teacher's data (ground-truth
renders of the 24 objects from random views) with blur, noise and brightness jitter, so that the softer
renders of a triplane are read too.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fewstep.nodes.zoo.multiview.data import (
    COLOURS,
    SHAPES,
    Primitive,
    ViewSpec,
    all_primitives,
    camera_features,
)
from fewstep.nodes.zoo.multiview.models import MVUNet, make_teacher, sample_views


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class CaptionProbe(nn.Module):
    """Images [N, 3, S, S] in −1..1 → (colour logits [N, 6], shape logits [N, 4])."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.trunk = nn.Sequential(_block(3, w, 1), _block(w, 2 * w, 2), _block(2 * w, 2 * w, 2),
                                   _block(2 * w, 4 * w, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.colour = nn.Linear(4 * w, len(COLOURS))
        self.shape = nn.Linear(4 * w, len(SHAPES))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.colour(h), self.shape(h)


def targets(prims: list[Primitive] | tuple[Primitive, ...], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour and shape class indices [N] of object indices ``labels`` [N] into ``prims``."""
    colours, shapes = list(COLOURS), list(SHAPES)
    c = torch.tensor([colours.index(prims[i].colour) for i in labels.tolist()])
    s = torch.tensor([shapes.index(prims[i].shape) for i in labels.tolist()])
    return c, s


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random box blur (3x3, half the batch), Gaussian noise (σ ≤ 0.1) and brightness (x0.8..1.2)."""
    n = x.shape[0]
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    pick = (torch.rand(n, 1, 1, 1, generator=gen) < 0.5).to(x.dtype)
    x = pick * blurred + (1 - pick) * x
    scale = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    x = ((x + 1) * scale - 1) + 0.1 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1)


def train_probe(images: torch.Tensor, colour: torch.Tensor, shape: torch.Tensor, steps: int, seed: int = 0,
                batch: int = 64, lr: float = 2e-3) -> CaptionProbe:
    """Cross-entropy on both heads with augmentation; AdamW, cosine decay."""
    torch.manual_seed(seed)
    net = CaptionProbe()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        c_logits, s_logits = net(augment(images[idx], gen))
        loss = F.cross_entropy(c_logits, colour[idx]) + F.cross_entropy(s_logits, shape[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval().requires_grad_(False)


@torch.no_grad()
def read_captions(probe: CaptionProbe, images: torch.Tensor) -> list[Primitive]:
    """The object the probe sees in each image [N, 3, S, S] (−1..1)."""
    c, s = probe(images)
    colours, shapes = list(COLOURS), list(SHAPES)
    return [Primitive(shapes[j], colours[i]) for i, j in zip(c.argmax(-1).tolist(), s.argmax(-1).tolist(), strict=True)]


@torch.no_grad()
def teacher_probe_accuracy(teacher_net: MVUNet, probe: CaptionProbe, text: torch.Tensor, views_per_caption: int = 2,
                           seed: int = 1) -> tuple[dict, torch.Tensor]:
    """Sample every caption from ``views_per_caption`` views (20 DDIM steps, CFG 3) and read them with the
    probe: how often colour / shape / both match the caption. ``text`` [24, D] embeds each object's caption.
    Returns the rates and the samples [24 · views_per_caption, 3, S, S]."""
    prims = all_primitives()
    teacher = make_teacher(copy.deepcopy(teacher_net))
    gen = torch.Generator().manual_seed(seed)
    n = len(prims) * views_per_caption
    views = torch.stack([torch.rand(n, generator=gen) * 360, torch.rand(n, generator=gen) * 30], dim=-1)
    labels = torch.arange(len(prims)).repeat_interleave(views_per_caption)
    size = ViewSpec().size
    images = sample_views(teacher, text[labels], camera_features(views), torch.randn(n, 3, size, size, generator=gen))
    read = read_captions(probe, images)
    colour = sum(r.colour == prims[i].colour for r, i in zip(read, labels.tolist(), strict=True)) / n
    shape = sum(r.shape == prims[i].shape for r, i in zip(read, labels.tolist(), strict=True)) / n
    both = sum(r == prims[i] for r, i in zip(read, labels.tolist(), strict=True)) / n
    return {"colour": round(colour, 4), "shape": round(shape, 4), "both": round(both, 4), "samples": n}, images
