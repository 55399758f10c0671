"""SD 2.x single files (issue #15: the embedding / inpainting templates name SD2 checkpoints): OpenCLIP-H text
tower under ``cond_stage_model.model.``, 64-channel heads, ComfyUI's v-prediction probe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import tiny_sd15, to_ldm_unet, to_ldm_vae, to_open_clip

from fewstep.app.api import Paths, use_paths
from fewstep.nodes.core import nodes as N

pytest.importorskip("diffusers")


def tiny_sd2_checkpoint(in_channels: int = 4, v_prediction: bool = False) -> tuple[dict, object, object]:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    unet15, vae, _ = tiny_sd15()
    torch.manual_seed(10)
    config = {**unet15.config, "in_channels": in_channels, "attention_head_dim": [1, 1, 2, 2],
              "use_linear_projection": True}
    unet = UNet2DConditionModel(**config).eval()
    text = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=64, bos_token_id=0, eos_token_id=2,
        pad_token_id=1)).eval()
    with torch.no_grad():
        for module in (unet, text):
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        if v_prediction:   # the spread ComfyUI's probe looks for in 768-v weights
            unet.up_blocks[3].attentions[2].transformer_blocks[0].norm1.bias.normal_(0, 0.2)
    ldm = to_ldm_unet(unet.state_dict(), [t.startswith("CrossAttn") for t in unet.config.up_block_types])
    ldm.update(to_ldm_vae(vae.state_dict(), 4))
    ldm.update({"cond_stage_model.model." + k: v for k, v in to_open_clip(text).items()})
    return {k: v.contiguous() for k, v in ldm.items()}, unet, text


@pytest.mark.parametrize(("in_channels", "v_prediction"), [(4, True), (9, False)])
def test_sd2_loads_with_its_prediction_and_penultimate_text_states(tmp_path: Path, in_channels: int,
                                                                   v_prediction: bool) -> None:
    ldm, unet, text = tiny_sd2_checkpoint(in_channels, v_prediction)
    (tmp_path / "checkpoints").mkdir()
    save_file(ldm, str(tmp_path / "checkpoints" / "sd2.safetensors"))
    with use_paths(Paths(model_roots=(tmp_path,))):
        model, clip, _ = N.CheckpointLoaderSimple.execute("sd2.safetensors").values
    assert model.extras["arch"] == "sd2" and clip.kind == "sd2"
    assert model.prediction == ("v" if v_prediction else "eps")
    assert all(torch.equal(a, b) for a, b in zip(model.model_fn.unet.state_dict().values(),
                                                 unet.state_dict().values(), strict=True))
    pos = N.CLIPTextEncode.execute("a photo", clip).values[0]
    with torch.no_grad():
        out = text(torch.tensor([clip.tokenizers[0]("a photo")]), output_hidden_states=True)
        norm = next(m for name, m in text.named_modules() if name.endswith("final_layer_norm"))
    assert clip.tokenizers[0]("a photo")[-1] == 0                      # SD2 pads with 0, not end tokens
    torch.testing.assert_close(pos[0][0], norm(out.hidden_states[-2]))
    latent = N.EmptyLatentImage.execute(64, 64, 1).values[0]
    out = N.KSampler.execute(model, 1, 2, 5.0, "euler", "normal", pos, N.ConditioningZeroOut.execute(pos).values[0],
                             latent, 1.0).values[0]["samples"]
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
