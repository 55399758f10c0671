"""Efficient-vDiT on the built-in video DiT: tile-sparse attention per layer, the attention's tile map, and the
layer-wise mask search (paper stage 2).

A video DiT block calls ``attention_fn(q, k, v, *, mask, grid)`` (``nodes.zoo.video.dit``); ``grid = (T, h, w)``
for self-attention over frame-major tokens, None for cross-attention. :func:`tile_attention_fn` returns such a
function that applies an ``a:b`` mask (``fewstep.kernels.tile_attention``) to self-attention and leaves
cross-attention dense.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fewstep.kernels.tile_attention import (
    TileLayout,
    flex_tile_attention,
    gathered_tile_attention,
    reference_tile_attention,
)

AttentionFn = Callable[..., torch.Tensor]
TileImpl = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, TileLayout, int], torch.Tensor]
IMPLEMENTATIONS: dict[str, TileImpl] = {
    "gathered": gathered_tile_attention,     # exact, only the kept tiles (CPU and GPU)
    "flex": flex_tile_attention,             # flex-attention block mask (fused when compiled on CUDA)
    "reference": reference_tile_attention,   # dense SDPA + mask (the definition)
}


def tile_attention_fn(refs: int, impl: str = "gathered") -> AttentionFn:
    """Self-attention with ``refs`` global reference frames (``a`` of ``a:b``; the rest is the clip's length),
    cross-attention unchanged. ``refs >= frames - 1`` keeps every tile, i.e. dense attention."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"tile attention implementation must be one of {sorted(IMPLEMENTATIONS)}, got {impl!r}")
    if refs < 0:
        raise ValueError(f"reference frames must be >= 0, got {refs}")
    kernel = IMPLEMENTATIONS[impl]

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
               grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        if grid is None:                                  # cross-attention to the text tokens
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        frames, h, w = grid
        return kernel(q, k, v, TileLayout(frames, min(refs, frames)), h * w)
    return attend


def with_layer_masks(dit: torch.nn.Module, refs_per_layer: Sequence[int | None], impl: str = "gathered"
                     ) -> torch.nn.Module:
    """A copy of ``dit`` whose block ``i`` uses ``refs_per_layer[i]`` reference frames (None = dense)."""
    blocks = dit.blocks
    if len(refs_per_layer) != len(blocks):
        raise ValueError(f"{len(refs_per_layer)} masks given for a model of {len(blocks)} layers")
    sparse = copy.deepcopy(dit)
    for block, refs in zip(sparse.blocks, refs_per_layer, strict=True):
        if refs is not None:
            block.attention_fn = tile_attention_fn(refs, impl)
    return sparse


def sparsity_of(refs_per_layer: Sequence[int | None], frames: int) -> float:
    """Mean tile sparsity over the layers (dense layers count 0)."""
    values = [0.0 if r is None else TileLayout(frames, min(r, frames)).sparsity for r in refs_per_layer]
    return sum(values) / len(values)


def tile_attention_map(dit: torch.nn.Module, run: Callable[[torch.nn.Module], torch.Tensor]) -> torch.Tensor:
    """``[layers, T, T]``: for each layer, the attention mass a query frame (row) gives each key frame (column),
    averaged over heads, queries of the frame and calls made by ``run(dit)`` (one forward, or a sampler).

    Each block's attention is replaced for the run by one that also records softmax(q k^T / sqrt(d)) summed
    within key-frame tiles; rows sum to 1. Efficient-vDiT's observation (Fig. 2): the diagonal dominates and
    the mass decays with temporal distance."""
    probe = copy.deepcopy(dit)
    sums: list[torch.Tensor | None] = [None] * len(probe.blocks)

    def recorder(index: int, inner: AttentionFn) -> AttentionFn:
        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
                   grid: tuple[int, int, int] | None = None) -> torch.Tensor:
            if grid is not None:
                frames, h, w = grid
                weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)  # [B, H, N, N]
                per_tile = weights.reshape(*weights.shape[:2], frames, h * w, frames, h * w).sum(-1).mean(3)
                tile = per_tile.mean((0, 1)).detach().float()                                  # [T, T]
                sums[index] = tile if sums[index] is None else sums[index] + tile
            return inner(q, k, v, mask=mask, grid=grid)
        return attend

    for i, block in enumerate(probe.blocks):
        block.attention_fn = recorder(i, block.attention_fn)
    with torch.no_grad():
        run(probe)
    if any(s is None for s in sums):
        raise ValueError("the run made no self-attention call")
    maps = torch.stack([s / s.sum(-1, keepdim=True) for s in sums])  # type: ignore[misc]
    return maps


@dataclass(frozen=True)
class SearchResult:
    """Per-layer reference-frame counts (None = dense) and what each choice cost."""

    refs: tuple[int | None, ...]
    errors: tuple[float, ...]          # relative output error of the chosen mask, layer alone
    sparsity: float                    # mean over layers
    tolerance: float


def search_layer_masks(dit: torch.nn.Module, run: Callable[[torch.nn.Module], torch.Tensor], frames: int,
                       tolerance: float, candidates: Sequence[int] | None = None) -> SearchResult:
    """Efficient-vDiT stage 2: for each layer alone, the sparsest mask whose relative error
    ``|run(sparse) - run(dense)| / |run(dense)|`` (Frobenius norms of the model outputs ``run`` returns) is at
    most ``tolerance``; dense when none qualifies. Candidates are reference-frame counts, tried sparsest first
    (fewest references); default ``0 .. frames - 2`` (``frames - 1`` references keep every tile)."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    order = sorted(set(candidates if candidates is not None else range(max(frames - 1, 0))))
    with torch.no_grad():
        reference = run(dit)
    scale = reference.norm().clamp_min(1e-12)
    layers = len(dit.blocks)
    chosen: list[int | None] = []
    errors: list[float] = []
    for layer in range(layers):
        pick, error = None, 0.0
        for refs in order:
            masks: list[int | None] = [None] * layers
            masks[layer] = refs
            with torch.no_grad():
                err = float((run(with_layer_masks(dit, masks)) - reference).norm() / scale)
            if err <= tolerance:
                pick, error = refs, err
                break
        chosen.append(pick)
        errors.append(error)
    return SearchResult(tuple(chosen), tuple(errors), sparsity_of(chosen, frames), tolerance)
