"""The SDXL refiner single-file layout (issue #15: the SDXL refiner templates): OpenCLIP-G alone as embedder 0,
a UNet conditioned on the pooled G embedding and 5 numbers (size, crop, aesthetic score)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import tiny_sd15, tiny_sdxl, to_ldm_unet, to_ldm_vae, to_open_clip

from fewstep.app.api import Paths, use_paths
from fewstep.nodes.core import nodes as N
from fewstep.nodes.core.sampling import model_cond

pytest.importorskip("diffusers")


def tiny_refiner_checkpoint() -> tuple[dict, object, object]:
    from diffusers import UNet2DConditionModel

    xl_unet, _, clip_g = tiny_sdxl()
    torch.manual_seed(9)
    config = {**xl_unet.config, "cross_attention_dim": 64, "projection_class_embeddings_input_dim": 64 + 5 * 256}
    unet = UNet2DConditionModel(**config).eval()
    _, vae, _ = tiny_sd15()
    ldm = to_ldm_unet(unet.state_dict(), [t.startswith("CrossAttn") for t in unet.config.up_block_types])
    ldm.update(to_ldm_vae(vae.state_dict(), 4))
    ldm.update({"conditioner.embedders.0.model." + k: v for k, v in to_open_clip(clip_g).items()})
    return {k: v.contiguous() for k, v in ldm.items()}, unet, clip_g


def test_refiner_loads_encodes_with_g_and_samples(tmp_path: Path) -> None:
    ldm, unet, clip_g = tiny_refiner_checkpoint()
    (tmp_path / "checkpoints").mkdir()
    save_file(ldm, str(tmp_path / "checkpoints" / "sd_xl_refiner_1.0.safetensors"))
    with use_paths(Paths(model_roots=(tmp_path,))):
        model, clip, _ = N.CheckpointLoaderSimple.execute("sd_xl_refiner_1.0.safetensors").values
    assert model.extras["arch"] == "sdxl_refiner" and clip.kind == "sdxl_refiner" and len(clip.encoders) == 1
    pos = N.CLIPTextEncode.execute("a photo", clip).values[0]
    with torch.no_grad():
        out_g = clip_g(torch.tensor([clip.tokenizers[0]("a photo")]), output_hidden_states=True)
    torch.testing.assert_close(pos[0][0], out_g.hidden_states[-2])
    torch.testing.assert_close(pos[0][1]["pooled_output"], out_g.text_embeds)
    latent = N.EmptyLatentImage.execute(64, 64, 1).values[0]
    cond = model_cond(pos, latent["samples"], "sdxl_refiner")
    assert cond["time_ids"].tolist() == [[64.0, 64.0, 0.0, 0.0, 6.0]]
    assert model_cond(pos, latent["samples"], "sdxl_refiner", negative=True)["time_ids"][0, 4] == 2.5
    neg = N.CLIPTextEncode.execute("blurry", clip).values[0]
    out = N.KSampler.execute(model, 3, 2, 4.0, "euler", "normal", pos, neg, latent, 0.3).values[0]
    assert out["samples"].shape == (1, 4, 8, 8) and torch.isfinite(out["samples"]).all()
