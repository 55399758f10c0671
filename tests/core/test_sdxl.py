"""SDXL single-file layout: UNet (label_emb, linear projections, deep transformers) and the OpenCLIP-G tower."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import tiny_sd15, tiny_sdxl, to_ldm_unet, to_ldm_vae, to_open_clip

from fewstep.app.api import Paths, use_paths
from fewstep.nodes.core import nodes as N
from fewstep.nodes.core.loaders import ldm_keys as K

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def sdxl():
    unet, clip_l, clip_g = tiny_sdxl()
    attn_up = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    ldm = to_ldm_unet(unet.state_dict(), attn_up)
    _, vae, _ = tiny_sd15()
    ldm.update(to_ldm_vae(vae.state_dict(), 4))
    ldm.update({"conditioner.embedders.0.transformer.text_model." + k.removeprefix("text_model."): v
                for k, v in clip_l.state_dict().items()})
    ldm.update({"conditioner.embedders.1.model." + k: v for k, v in to_open_clip(clip_g).items()})
    return unet, clip_l, clip_g, {k: v.contiguous() for k, v in ldm.items()}


def test_sdxl_unet_layout_agrees_with_diffusers_converter_and_ours(sdxl) -> None:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet, _, _, ldm = sdxl
    reference = convert_ldm_unet_checkpoint(dict(ldm), dict(unet.config))
    ours = K.convert_unet(K.split_prefix(ldm, K.UNET_PREFIX))
    expected = unet.state_dict()
    assert sorted(reference) == sorted(expected) == sorted(ours)
    assert all(torch.equal(ours[k], expected[k]) and torch.equal(reference[k], expected[k]) for k in expected)


def test_open_clip_tower_converts_to_transformers(sdxl) -> None:
    _, _, clip_g, ldm = sdxl
    ours = K.convert_open_clip(K.split_prefix(ldm, K.OPENCLIP_PREFIX))
    expected = {k: v for k, v in clip_g.state_dict().items() if not k.endswith("position_ids")}
    assert sorted(ours) == sorted(expected)
    assert all(torch.equal(ours[k], expected[k]) for k in expected)


def test_sdxl_checkpoint_loads_and_samples(sdxl, tmp_path: Path) -> None:
    unet, clip_l, clip_g, ldm = sdxl
    (tmp_path / "checkpoints").mkdir()
    save_file(ldm, str(tmp_path / "checkpoints" / "tiny-sdxl.safetensors"))
    with use_paths(Paths(model_roots=(tmp_path,))):
        model, clip, _ = N.CheckpointLoaderSimple.execute("tiny-sdxl.safetensors").values
        assert model.extras["arch"] == "sdxl" and clip.kind == "sdxl"
        pos = N.CLIPTextEncode.execute("a photo", clip).values[0]
        # states = [CLIP-L penultimate | OpenCLIP-G penultimate], pooled = G's projected EOS state
        ids = torch.tensor([clip.tokenizers[0]("a photo")])
        with torch.no_grad():
            want_l = clip_l(ids, output_hidden_states=True).hidden_states[-2]
            out_g = clip_g(torch.tensor([clip.tokenizers[1]("a photo")]), output_hidden_states=True)
        torch.testing.assert_close(pos[0][0], torch.cat([want_l, out_g.hidden_states[-2]], -1))
        torch.testing.assert_close(pos[0][1]["pooled_output"], out_g.text_embeds)
        latent = N.EmptyLatentImage.execute(64, 64, 1).values[0]
        neg = N.ConditioningZeroOut.execute(pos).values[0]
        out = N.KSampler.execute(model, 3, 2, 4.0, "euler", "karras", pos, neg, latent, 1.0).values[0]
    assert out["samples"].shape == (1, 4, 8, 8) and torch.isfinite(out["samples"]).all()
