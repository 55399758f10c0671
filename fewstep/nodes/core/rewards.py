"""Differentiable rewards of generated images, and their weighted combination.

A reward is any callable ``reward(images, prompts) -> Tensor [B]`` with ``images`` a ComfyUI IMAGE
``[B, H, W, C]`` in 0..1 and one prompt per image; it must be differentiable with respect to ``images`` so
a generator can be trained by back-propagating through it (R0, PSO, the MLCM preference term). The
``REWARD_MODEL`` link type carries such a callable.

Rewards here:
    * :class:`ScorerReward`: cosine similarity of the zoo image-text scorer (a CLIP-score analogue, in -1..1);
    * :class:`ProbeReward`: log-probability, under the zoo attribute probe, of the scene the prompt describes
      (colour, shape and size of every object, empty cells elsewhere), marginalised over the cell placements
      the caption allows; an exact, interpretable alignment reward;
    * :class:`SaturationReward`: mean HSV saturation, a rule-based reward that is trivially hackable (it
      prefers a garish background to a correct picture) — the demonstration of reward hacking;
    * :class:`WeightedRewards`: Σ_j w_j R_j, optionally with per-reward gradient normalisation (R0, Luo et al.
      2025, Fig. 8: each reward's image-space gradient scaled to unit norm before weighting).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@runtime_checkable
class Reward(Protocol):
    """``reward(images [B,H,W,C] in 0..1, prompts: list[str] of length B) -> Tensor [B]``, differentiable in images."""

    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor: ...


def check_batch(name: str, images: Tensor, prompts: Sequence[str]) -> None:
    """Clear errors for a wrongly shaped IMAGE batch or a prompt count that does not match it."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name}: images must be an IMAGE tensor [B,H,W,3] in 0..1, got {shape}")
    if isinstance(prompts, str) or len(prompts) != images.shape[0]:
        got = "a single string" if isinstance(prompts, str) else f"{len(prompts)} prompts"
        raise ValueError(f"{name}: {images.shape[0]} images need {images.shape[0]} prompts, got {got}")


def _follow(module: nn.Module, images: Tensor) -> nn.Module:
    """Move a frozen judging network to the images' device (in place; rewards go wherever the generator is)."""
    p = next(module.parameters())
    if p.device != images.device:
        module.to(images.device)
    return module


# ----------------------------------------------------------------------------- scorer
class ScorerReward:
    """Cosine similarity of the zoo scorer's image and prompt embeddings, ``[B]`` in -1..1.

    Args:
        scorer: a ``nodes.zoo.builtin.Scorer`` (default: ``load_scorer()`` on CPU, moved to the images'
            device on first use). The text side runs without gradients (prompts are constants).
    """

    def __init__(self, scorer: Any = None) -> None:
        if scorer is None:
            from fewstep.nodes.zoo.builtin import load_scorer

            scorer = load_scorer()
        self.scorer = scorer

    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        check_batch("ScorerReward", images, prompts)
        _follow(self.scorer.heads, images)
        _follow(self.scorer.effnet, images)
        with torch.no_grad():
            text = self.scorer.text_embeds(list(prompts)).to(images.device)      # [B, 256] unit vectors
        return (self.scorer.image_embeds(images) * text.float()).sum(-1)         # [B]


# ----------------------------------------------------------------------------- probe
def placements(scene: Any) -> list[tuple[int, ...]]:
    """Every assignment of the scene's objects to grid cells (row-major index 0..8) that its caption allows.

    Objects are in reading order (``nodes.zoo.data``). ``single``: the named cell. ``row``: the three
    columns of one of the 3 rows. ``relation``: two cells on one row ("left of"/"right of") or one column
    ("above"/"below"), the first object first: 3 lines x 3 pairs = 9. ``count``: any n distinct cells in
    reading order (C(9, n)). Cells fixed by the scene are kept.
    """
    from fewstep.nodes.zoo import data

    g, objs = data.GRID, scene.objects
    if all(o.row is not None and o.col is not None for o in objs):
        return [tuple(o.row * g + o.col for o in objs)]
    if scene.kind == "row":
        return [tuple(r * g + o.col for o in objs) for r in range(g)]
    if scene.kind == "relation":
        horizontal = scene.relation in ("left of", "right of")
        return [tuple(line * g + a for a in pair) if horizontal else tuple(a * g + line for a in pair)
                for line in range(g) for pair in itertools.combinations(range(g), 2)]
    if scene.kind == "count":
        return list(itertools.combinations(range(g * g), len(objs)))
    raise ValueError(f"placements: cannot place objects of a {scene.kind!r} scene")


@dataclass
class SceneIndex:
    """A batch of parsed scenes as padded index tensors (objects ≤ 3, placements ≤ 84 per scene).

    attrs [B, O, 3] long: colour+1, shape+1, size of each object (0 for padding);
    obj_mask [B, O] bool; cells [B, P, O] long: cell of object o in placement p; place_mask [B, P] bool.
    """

    attrs: Tensor
    obj_mask: Tensor
    cells: Tensor
    place_mask: Tensor

    @classmethod
    def build(cls, prompts: Sequence[str]) -> SceneIndex:
        from fewstep.nodes.zoo import data

        colours, sizes = list(data.COLOURS), list(data.SIZES)
        scenes = []
        for i, text in enumerate(prompts):
            scene = data.parse_caption(text)
            if scene is None:
                raise ValueError(f"ProbeReward: prompt {i} ({text!r}) is outside the procedural caption grammar "
                                 "(fewstep/nodes/zoo/data.py); the probe reward needs prompts like 'a small red circle "
                                 "at the top left'")
            scenes.append(scene)
        places = [placements(s) for s in scenes]
        n_obj, n_place = max(len(s.objects) for s in scenes), max(len(p) for p in places)
        attrs = torch.zeros(len(scenes), n_obj, 3, dtype=torch.long)
        obj_mask = torch.zeros(len(scenes), n_obj, dtype=torch.bool)
        cells = torch.zeros(len(scenes), n_place, n_obj, dtype=torch.long)
        place_mask = torch.zeros(len(scenes), n_place, dtype=torch.bool)
        for b, (scene, pl) in enumerate(zip(scenes, places, strict=True)):
            for o, obj in enumerate(scene.objects):
                attrs[b, o] = torch.tensor([colours.index(obj.colour) + 1, data.SHAPES.index(obj.shape) + 1,
                                            sizes.index(obj.size)])
            obj_mask[b, : len(scene.objects)] = True
            cells[b, : len(pl), : len(scene.objects)] = torch.tensor(pl)
            place_mask[b, : len(pl)] = True
        return cls(attrs, obj_mask, cells, place_mask)

    def to(self, device: torch.device) -> SceneIndex:
        return SceneIndex(*(t.to(device) for t in (self.attrs, self.obj_mask, self.cells, self.place_mask)))


def scene_log_prob(colour: Tensor, shape: Tensor, size: Tensor, index: SceneIndex) -> Tensor:
    """log p(scene | image) under the probe's independent per-cell categoricals, marginalised over placements.

    colour [B,9,7], shape [B,9,6], size [B,9,2] are logits (class 0 of colour and shape = empty cell).
    For a placement π (object o in cell π_o):
        log p(π) = Σ_k log p_k(empty) + Σ_o [log p_{π_o}(colour_o, shape_o, size_o) − log p_{π_o}(empty)]
    The placements are disjoint events, so p(the image shows the caption) = Σ_π p(π) and the reward is
    logsumexp_π log p(π) (0 when the probe is certain of one allowed placement). Returns [B].
    """
    lc, ls, lz = (F.log_softmax(t.float(), -1) for t in (colour, shape, size))
    empty = lc[..., 0] + ls[..., 0]                                                   # [B, 9]

    def per_object(logp: Tensor, which: int) -> Tensor:                               # -> [B, O, 9]
        idx = index.attrs[:, :, which, None].expand(-1, -1, logp.shape[1])           # [B, O, 9]
        return logp.transpose(1, 2).gather(1, idx)                                    # [B, O, 9]

    occupied = per_object(lc, 0) + per_object(ls, 1) + per_object(lz, 2)             # [B, O, 9]
    delta = (occupied - empty[:, None, :]) * index.obj_mask[..., None]                # [B, O, 9]
    per_place = delta.gather(2, index.cells.transpose(1, 2)).sum(1)                   # [B, P]
    per_place = per_place + empty.sum(1, keepdim=True)
    per_place = per_place.masked_fill(~index.place_mask, float("-inf"))
    return torch.logsumexp(per_place, 1)                                              # [B]


class ProbeReward:
    """log p(caption's scene | image) under the zoo attribute probe, per grid cell (divided by 9), ``[B]`` ≤ 0.

    0 means the probe is certain the image shows exactly the captioned objects (colour, shape, size) in a
    placement the caption allows and nothing else. Prompts must follow the procedural caption grammar.

    Args:
        probe: a ``nodes.zoo.builtin.Probe`` or its ``ProbeNet`` (default: ``load_probe()``).
    """

    def __init__(self, probe: Any = None) -> None:
        if probe is None:
            from fewstep.nodes.zoo.builtin import load_probe

            probe = load_probe()
        self.net = probe if isinstance(probe, nn.Module) else probe.net

    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        check_batch("ProbeReward", images, prompts)
        net = _follow(self.net, images)
        x = images.permute(0, 3, 1, 2).float()                                       # [B, 3, H, W]
        if x.shape[-2:] != (64, 64):
            x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
        colour, shape, size = net(x.clamp(0, 1))
        index = SceneIndex.build(prompts).to(images.device)
        return scene_log_prob(colour, shape, size, index) / colour.shape[1]


# ----------------------------------------------------------------------------- rule-based
class SaturationReward:
    """Mean HSV saturation (max−min)/max of the pixels, ``[B]`` in 0..1: "more saturated is better".

    Deliberately naive: the procedural scenes sit on a dark grey background (saturation 0.18), so the
    cheapest way up is to colour the background — the reward-hacking demonstration of the R0 table.

    Args:
        eps: added to max(r, g, b) so black pixels have a finite gradient.
    """

    def __init__(self, eps: float = 1e-2) -> None:
        if eps <= 0:
            raise ValueError(f"SaturationReward: eps must be > 0, got {eps}")
        self.eps = eps

    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        check_batch("SaturationReward", images, prompts)
        x = images.float().clamp(0, 1)
        hi, lo = x.amax(-1), x.amin(-1)                                               # [B, H, W]
        return ((hi - lo) / (hi + self.eps)).flatten(1).mean(1)                       # [B]


# ----------------------------------------------------------------------------- combination
@dataclass(frozen=True)
class Term:
    """One weighted reward of a :class:`WeightedRewards`."""

    name: str
    reward: Reward
    weight: float


class WeightedRewards:
    """J = Σ_j w_j R_j, with optional per-reward gradient normalisation (R0's "normalised rewards").

    ``__call__`` is the plain weighted sum ``[B]`` (a Reward itself). Trainers call :meth:`objective`, whose
    gradient with respect to the images is, per sample b,
        normalize_grads=False:  Σ_j w_j ∇R_j(x_b) / B
        normalize_grads=True:   Σ_j w_j ∇R_j(x_b) / (‖∇R_j(x_b)‖ + eps) / B
    so with normalisation no reward dominates by the size of its gradient (R0, Luo et al. 2025, §4 and
    Fig. 8). The norm is taken per sample in image space (our choice: the paper does not say over what;
    image space needs one extra backward through the small reward nets only, not through the generator).

    Args:
        terms: (name, reward, weight) triples; names must be unique.
        normalize_grads: apply the normalisation in :meth:`objective`.
        eps: keeps a zero gradient (e.g. a saturated reward) from dividing by zero.
    """

    def __init__(self, terms: Sequence[Term | tuple[str, Reward, float]], normalize_grads: bool = False,
                 eps: float = 1e-8) -> None:
        self.terms = [t if isinstance(t, Term) else Term(*t) for t in terms]
        if not self.terms:
            raise ValueError("WeightedRewards: give at least one reward")
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise ValueError(f"WeightedRewards: reward names must be unique, got {names}")
        for t in self.terms:
            if not callable(t.reward) or not math.isfinite(t.weight):
                raise ValueError(f"WeightedRewards: term {t.name!r} needs a callable reward and a finite weight")
        self.normalize_grads = normalize_grads
        self.eps = eps

    def values(self, images: Tensor, prompts: list[str]) -> dict[str, Tensor]:
        """Each reward's value ``[B]`` (differentiable)."""
        check_batch("WeightedRewards", images, prompts)
        return {t.name: t.reward(images, list(prompts)).float() for t in self.terms}

    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        values = self.values(images, prompts)
        return sum(t.weight * values[t.name] for t in self.terms)

    def objective(self, images: Tensor, prompts: list[str]) -> tuple[Tensor, dict[str, float]]:
        """(scalar to maximise, {reward name: batch mean}); see the class docstring for its gradient."""
        if not self.normalize_grads:
            values = self.values(images, prompts)
            total = sum(t.weight * values[t.name] for t in self.terms).mean()
            return total, {k: float(v.detach().mean()) for k, v in values.items()}
        leaf = images.detach().requires_grad_(True)
        direction = torch.zeros_like(leaf, dtype=torch.float32)                      # [B, H, W, C]
        means = {}
        with torch.enable_grad():
            for t in self.terms:
                value = t.reward(leaf, list(prompts)).float()                         # [B]
                (grad,) = torch.autograd.grad(value.sum(), leaf)                      # [B, H, W, C]
                norm = grad.float().flatten(1).norm(dim=1).clamp_min(self.eps)        # [B]
                direction += t.weight * grad.float() / norm[:, None, None, None]
                means[t.name] = float(value.detach().mean())
        # d/dx (x · direction).sum() / B = direction / B; its value is rebased to the weighted mean reward
        surrogate = (images.float() * direction).sum() / images.shape[0]
        weighted = sum(t.weight * means[t.name] for t in self.terms)
        return surrogate - surrogate.detach() + weighted, means


@torch.no_grad()
def reward_metrics(reward: Reward, images: Tensor, prompts: list[str]) -> dict[str, float | int]:
    """{"reward_mean", "reward_std", "n"} of ``reward`` on a batch, plus "<name>_mean" per term of a
    :class:`WeightedRewards`."""
    check_batch("reward_metrics", images, prompts)
    if not callable(reward):
        raise TypeError(f"reward_metrics: REWARD_MODEL must be callable, got {type(reward).__name__}")
    values = reward(images, list(prompts)).float()
    if values.shape != (images.shape[0],):
        raise ValueError(f"reward_metrics: a reward must return [B] = [{images.shape[0]}], got {tuple(values.shape)}")
    out: dict[str, float | int] = {"reward_mean": float(values.mean()), "n": int(images.shape[0]),
                                   "reward_std": float(values.std()) if values.numel() > 1 else 0.0}
    if isinstance(reward, WeightedRewards):
        out |= {f"{k}_mean": float(v.mean()) for k, v in reward.values(images, list(prompts)).items()}
    return out
