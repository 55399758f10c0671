"""VAEDecodeTiled / VAEEncodeTiled and CLIPTextEncodeSDXL / CLIPTextEncodeSDXLRefiner (issue #15) on tiny
random models: tiled results against the one-pass VAE, interruption between tiles, and the SDXL text nodes'
states and size conditioning against the encoders run by hand."""

from __future__ import annotations

import pytest
import torch
from sd_fixtures import tiny_sdxl

from fewstep.nodes.core.nodes_vae_text import (
    CLIPTextEncodeSDXL,
    CLIPTextEncodeSDXLRefiner,
    VAEDecodeTiled,
    VAEEncodeTiled,
)
from fewstep.nodes.core.sampling import model_cond
from fewstep.nodes.core.text import ClipTokenizer, TextEncoder
from fewstep.nodes.core.vae import VAEWrapper
from fewstep.nodes.core.vae_tiled import tiled_map


def _vae() -> VAEWrapper:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2).eval()
    return VAEWrapper(vae, 0.5)


def test_tiled_map_is_exact_for_a_pointwise_map() -> None:
    # blending is a convex combination: a map with no spatial context comes out exactly, at any tiling
    x = torch.randn(2, 3, 37, 29, generator=torch.Generator().manual_seed(0))
    for tile, overlap in ((8, 2), (5, 0), (16, 7)):
        out = tiled_map(lambda t: t.repeat_interleave(2, -1).repeat_interleave(2, -2) * 3, x, (37, 29), tile, overlap, 1, 2)
        torch.testing.assert_close(out, (x * 3).repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_vae_tiled_nodes_follow_the_one_pass_vae() -> None:
    # the tiny VAE downsamples by 2, so tile_size 24 px is 12 latent cells: 2 x 3 tiles on a 20 x 28 latent.
    # Its receptive field spans a whole tile, so the per-tile GroupNorm / padding effects are large here (real
    # SD tiles of 64 cells are far wider than the context); measured mean gaps: decode 0.036 (overlap 8 px),
    # 0.041 (no overlap) against mean |image| 0.53; encode 0.018 against mean |latent| 0.12
    vae = _vae()
    latent = torch.randn(1, 4, 20, 28, generator=torch.Generator().manual_seed(1))
    whole = vae.decode(latent)
    tiled = VAEDecodeTiled.execute({"samples": latent}, vae, 24, 8, 64, 8).values[0]
    abutting = VAEDecodeTiled.execute({"samples": latent}, vae, 24, 0, 64, 8).values[0]
    assert tiled.shape == whole.shape == (1, 40, 56, 3)
    gap, gap_abutting = ((t - whole).abs().mean().item() for t in (tiled, abutting))
    assert gap < 0.1 * whole.abs().mean().item() and gap < gap_abutting, (gap, gap_abutting)
    untiled = VAEDecodeTiled.execute({"samples": latent}, vae, 256, 64, 64, 8).values[0]
    torch.testing.assert_close(untiled, whole)                      # one tile: exactly the one-pass decode
    pixels = torch.rand(1, 44, 60, 3, generator=torch.Generator().manual_seed(2))
    enc = VAEEncodeTiled.execute(pixels, vae, 24, 8, 64, 8).values[0]["samples"]
    ref = vae.encode(pixels)
    assert enc.shape == ref.shape == (1, 4, 22, 30)
    assert (enc - ref).abs().mean().item() < 0.25 * ref.abs().mean().item()


def test_tiled_decode_stops_between_tiles_on_interrupt(monkeypatch) -> None:
    import fewstep.nodes.core.vae_tiled as vt
    from fewstep.app.api import InterruptedError_

    calls = []

    def interrupt_after_two() -> None:
        calls.append(1)
        if len(calls) > 2:
            raise InterruptedError_("interrupted")

    monkeypatch.setattr(vt, "check_interrupted", interrupt_after_two)
    decoded = []
    vae = _vae()
    original = vae.decode
    monkeypatch.setattr(vae, "decode", lambda z: decoded.append(1) or original(z))
    with pytest.raises(InterruptedError_):
        VAEDecodeTiled.execute({"samples": torch.zeros(1, 4, 40, 40)}, vae, 32, 8, 64, 8)
    assert len(decoded) == 2                                          # 9 tiles planned, 2 decoded


@pytest.fixture(scope="module")
def sdxl_clip() -> TextEncoder:
    _, clip_l, clip_g = tiny_sdxl()
    return TextEncoder("sdxl", [clip_l, clip_g], [ClipTokenizer(), ClipTokenizer(pad_id=0)])


def test_clip_text_encode_sdxl(sdxl_clip: TextEncoder) -> None:
    cond = CLIPTextEncodeSDXL.execute(sdxl_clip, 896, 1152, 16, 32, 1024, 1024, "a red cube", "a blue ball").values[0]
    states, extra = cond[0]
    l_only = sdxl_clip.encode("a blue ball")[0][0][..., :64]          # CLIP-L part of the same prompt
    g_only = sdxl_clip.encode("a red cube")[0]
    torch.testing.assert_close(states[..., :64], l_only)
    torch.testing.assert_close(states[..., 64:], g_only[0][..., 64:])
    torch.testing.assert_close(extra["pooled_output"], g_only[1]["pooled_output"])
    ids = model_cond(cond, torch.zeros(1, 4, 128, 128), "sdxl")["time_ids"]
    assert ids.tolist() == [[1152, 896, 32, 16, 1024, 1024]]         # (h, w, crop top, crop left, target h, w)
    # a longer G prompt: L is padded with its empty-prompt window to the same 154 tokens
    long = " ".join(["word"] * 90)
    padded = CLIPTextEncodeSDXL.execute(sdxl_clip, 1024, 1024, 0, 0, 1024, 1024, long, "short").values[0][0][0]
    assert padded.shape == (1, 154, 128)
    torch.testing.assert_close(padded[:, 77:, :64], sdxl_clip.encode("")[0][0][..., :64])


def test_clip_text_encode_sdxl_refiner_and_errors(sdxl_clip: TextEncoder) -> None:
    cond = CLIPTextEncodeSDXLRefiner.execute(2.5, 768, 640, "a cat", sdxl_clip).values[0]
    assert cond[0][1]["aesthetic_score"] == 2.5 and cond[0][1]["width"] == 768
    ids = model_cond(cond, torch.zeros(1, 4, 96, 96), "sdxl_refiner")["time_ids"]
    assert ids.tolist() == [[640, 768, 0, 0, 2.5]]
    sd1 = TextEncoder("sd1", sdxl_clip.encoders[:1], sdxl_clip.tokenizers[:1])
    with pytest.raises(ValueError, match="SDXL CLIP"):
        CLIPTextEncodeSDXL.execute(sd1, 1024, 1024, 0, 0, 1024, 1024, "a", "b")
