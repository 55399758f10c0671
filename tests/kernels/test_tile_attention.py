"""Efficient-vDiT tile masks: the sparsity formula against counted tiles and the paper's figures, and the
gathered / flex implementations against the dense SDPA reference (values and gradients)."""

from __future__ import annotations

import warnings

import pytest
import torch

from fewstep.kernels.tile_attention import (
    TileLayout,
    flex_tile_attention,
    gathered_tile_attention,
    reference_tile_attention,
    token_mask,
)


@pytest.mark.parametrize(("frames", "refs"), [(8, 2), (8, 1), (8, 0), (8, 8), (24, 3), (24, 12), (5, 4), (1, 0)])
def test_sparsity_formula_equals_the_counted_tiles(frames: int, refs: int) -> None:
    layout = TileLayout(frames, refs)
    tiles = layout.tiles()
    assert int(tiles.sum()) == layout.computed_tiles
    assert layout.sparsity == pytest.approx(1 - tiles.float().mean().item())
    mask = token_mask(layout, 3)
    assert mask.shape == (frames * 3, frames * 3) and int(mask.sum()) == layout.computed_tiles * 9


def test_the_papers_masks_and_the_notation() -> None:
    # Efficient-vDiT Table 1 reports 45.5 % (2:6), 64.4 % (1:7), 21.5 % (12:12), 72.1 % (3:21) with text tokens
    # in the sequence too; the frame tiles alone give slightly more.
    for text, expected in (("2:6", 0.469), ("1:7", 0.656), ("12:12", 0.229), ("3:21", 0.729)):
        layout = TileLayout.parse(text)
        assert layout.name == text.replace(" ", "")
        assert layout.sparsity == pytest.approx(expected, abs=0.001)
    assert TileLayout.parse("2:6").for_frames(4) == TileLayout(4, 2)
    with pytest.raises(ValueError, match="a:b"):
        TileLayout.parse("dense")
    with pytest.raises(ValueError):
        TileLayout(4, 5)


def _qkv(frames: int, tokens: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, frames * tokens, 8, generator=g, dtype=torch.float64) for _ in range(3))


@pytest.mark.parametrize("refs", [0, 1, 2, 5, 6])
def test_gathered_equals_the_dense_reference(refs: int) -> None:
    layout, tokens = TileLayout(6, refs), 5
    q, k, v = _qkv(6, tokens)
    expected = reference_tile_attention(q, k, v, layout, tokens)
    assert torch.allclose(gathered_tile_attention(q, k, v, layout, tokens), expected, atol=1e-12)
    # and the mask matters: dense attention differs unless every tile is kept
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(dense, expected) == (layout.sparsity == 0.0)   # 5:1 keeps every tile too


def test_gathered_gradients_equal_the_references() -> None:
    layout, tokens = TileLayout(5, 2), 4
    inputs = [x.requires_grad_() for x in _qkv(5, tokens, seed=1)]
    weight = torch.randn(2, 3, 20, 8, dtype=torch.float64)
    grads = []
    for fn in (reference_tile_attention, gathered_tile_attention):
        (fn(*inputs, layout, tokens) * weight).sum().backward()
        grads.append([x.grad.clone() for x in inputs])
        for x in inputs:
            x.grad = None
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_flex_attention_block_mask_equals_the_reference_on_the_cpu() -> None:
    layout, tokens = TileLayout(8, 2), 20          # 160 tokens: 128-token blocks straddle frame borders
    q, k, v = (x.float() for x in _qkv(8, tokens, seed=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "flex_attention called without torch.compile()"
        out = flex_tile_attention(q, k, v, layout, tokens)
    assert torch.allclose(out, reference_tile_attention(q, k, v, layout, tokens), atol=1e-5)


def test_a_wrong_token_count_is_refused() -> None:
    q, k, v = _qkv(4, 3)
    with pytest.raises(ValueError, match="frames"):
        gathered_tile_attention(q, k, v, TileLayout(5, 1), 3)


@pytest.mark.gpu
def test_compiled_flex_kernel_matches_the_reference_on_cuda() -> None:
    layout, tokens = TileLayout(8, 2), 256
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 4, 8 * tokens, 64, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    compiled = torch.compile(flex_tile_attention)
    out = compiled(q, k, v, layout, tokens)
    ref = reference_tile_attention(q.float(), k.float(), v.float(), layout, tokens)
    assert (out.float() - ref).abs().max().item() < 3e-2
