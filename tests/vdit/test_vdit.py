"""Efficient-vDiT on a tiny random video DiT: masks per layer, the tile map, the layer-wise search, the nodes."""

from __future__ import annotations

import hashlib

import pytest
import torch

from fewstep.nodes.vdit.attention import (
    search_layer_masks,
    sparsity_of,
    tile_attention_fn,
    tile_attention_map,
    with_layer_masks,
)
from fewstep.nodes.vdit.nodes import VDiTAttentionMap, VDiTMaskSearch, VDiTTileAttention, parse_masks
from fewstep.nodes.zoo.video.dit import PRESETS, VideoDiT

FRAMES = 4


@pytest.fixture(scope="module")
def dit() -> VideoDiT:
    torch.manual_seed(0)
    model = VideoDiT(PRESETS["test"]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))    # random weights far from the zero-initialised output layers
    return model


def _inputs(frames: int = FRAMES) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    cfg = PRESETS["test"]
    x = torch.randn(1, frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    return x, torch.tensor([500.0]), torch.randn(1, 5, cfg.text_dim, generator=g)


def _run(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(*_inputs())


def test_masks_keep_every_tile_only_when_dense(dit: VideoDiT) -> None:
    dense = _run(dit)
    assert torch.allclose(_run(with_layer_masks(dit, [FRAMES - 1] * 2)), dense, atol=1e-5)  # 3:1 keeps all
    assert not torch.allclose(_run(with_layer_masks(dit, [0, 0])), dense, atol=1e-3)
    gathered = _run(with_layer_masks(dit, [1, None], "gathered"))
    assert torch.allclose(gathered, _run(with_layer_masks(dit, [1, None], "reference")), atol=1e-5)
    assert torch.allclose(_run(dit), dense)                                   # the input model is unchanged
    assert sparsity_of([1, None], FRAMES) == pytest.approx((1 - 10 / 16) / 2)
    with pytest.raises(ValueError, match="layers"):
        with_layer_masks(dit, [1])
    with pytest.raises(ValueError, match="implementation"):
        tile_attention_fn(1, "triton")


def test_tile_map_rows_are_distributions_and_match_a_direct_computation(dit: VideoDiT) -> None:
    maps = tile_attention_map(dit, _run)
    assert maps.shape == (2, FRAMES, FRAMES) and bool((maps >= 0).all())
    assert torch.allclose(maps.sum(-1), torch.ones(2, FRAMES), atol=1e-5)
    seen: list[torch.Tensor] = []

    def keep_first(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask=None, grid=None) -> torch.Tensor:
        if grid is not None and not seen:
            weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1)[0]    # [H, N, N]
            p = grid[1] * grid[2]
            tiles = torch.stack([torch.stack([weights[:, i * p:(i + 1) * p, j * p:(j + 1) * p].sum(-1).mean()
                                              for j in range(grid[0])]) for i in range(grid[0])])
            seen.append(tiles)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    probe = with_layer_masks(dit, [None, None])
    probe.blocks[0].attention_fn = keep_first
    _run(probe)
    assert torch.allclose(maps[0], seen[0] / seen[0].sum(-1, keepdim=True), atol=1e-5)


def test_search_picks_the_sparsest_mask_within_tolerance(dit: VideoDiT) -> None:
    loose = search_layer_masks(dit, _run, FRAMES, tolerance=1e9)
    assert loose.refs == (0, 0) and loose.sparsity == pytest.approx(1 - 1 / FRAMES)
    strict = search_layer_masks(dit, _run, FRAMES, tolerance=0.0)
    assert strict.refs == (None, None) and strict.sparsity == 0.0
    # an intermediate tolerance: each chosen mask's own error is within it, and a sparser one was not
    middle_tol = sorted(search_layer_masks(dit, _run, FRAMES, tolerance=1e9, candidates=[1]).errors)[0] * 1.01
    middle = search_layer_masks(dit, _run, FRAMES, tolerance=middle_tol)
    for layer, (refs, error) in enumerate(zip(middle.refs, middle.errors, strict=True)):
        assert error <= middle_tol
        if refs is not None and refs > 0:
            masks = [None, None]
            masks[layer] = refs - 1
            base = _run(dit)
            assert float((_run(with_layer_masks(dit, masks)) - base).norm() / base.norm()) > middle_tol
    assert 0.0 <= middle.sparsity <= loose.sparsity


def test_parse_masks() -> None:
    assert parse_masks("2", 3) == [2, 2, 2]
    assert parse_masks("2, dense ,0", 3) == [2, None, 0]
    for bad in ("2,2", "two", ""):
        with pytest.raises(ValueError):
            parse_masks(bad, 3)


class _HashText:
    """A deterministic stand-in for MiniLM: token states from the text's hash."""

    def encode_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        states = [torch.randn(6, 384, generator=torch.Generator().manual_seed(
            int(hashlib.sha1(t.encode()).hexdigest()[:8], 16))) for t in texts]
        return torch.stack(states), torch.ones(len(texts), 6, dtype=torch.bool)


@pytest.fixture(scope="module")
def video_model(dit: VideoDiT):
    pytest.importorskip("diffusers")
    from fewstep.nodes.zoo.builtin import load_vae
    from fewstep.nodes.zoo.video.model import VideoModel

    vae, scale = load_vae("cpu", torch.float32, lean=True)
    return VideoModel(dit, vae, scale, _HashText())


def test_nodes_return_new_models_and_tables(video_model) -> None:
    sparse = VDiTTileAttention.execute(video_model, "1,dense", "gathered").values[0]
    assert sparse.dit is not video_model.dit and sparse.info["tile_masks"] == [1, None]
    searched, table = VDiTMaskSearch.execute(video_model, "a red circle moving right", 1e9, 3, 1, 1.0, 0,
                                             "gathered").values
    assert [row["mask"] for row in table["layers"]] == ["0:3", "0:3"] and searched.info["tile_masks"] == [0, 0]
    image, stats = VDiTAttentionMap.execute(video_model, "a red circle moving right", 3, 1, 1.0, 0).values
    assert image.shape == (1, 36, 2 * 36 + 4, 3) and float(image.min()) >= 0 and float(image.max()) <= 1
    assert len(stats["layers"]) == 2 and stats["uniform_diagonal"] == pytest.approx(1 / 3, abs=1e-4)
