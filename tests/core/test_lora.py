"""LoRA: kohya and diffusers/peft key styles onto the UNet and the CLIP text encoder, applied reversibly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import tiny_sd15, to_ldm_checkpoint

from fewstep.app.api import Paths, use_paths
from fewstep.nodes.core import nodes as N
from fewstep.nodes.core.loaders.lora import applied, lora_patches

pytest.importorskip("diffusers")
UNET_MOD = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q"   # a Linear [64, 64]
TE_MOD = "encoder.layers.1.self_attn.v_proj"                               # a Linear [64, 64]


def _lowrank(seed: int, out_dim: int, in_dim: int, rank: int = 4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_dim, rank, generator=g) * 0.1, torch.randn(rank, in_dim, generator=g) * 0.1


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    unet, vae, text = tiny_sd15()
    root = tmp_path_factory.mktemp("models")
    (root / "checkpoints").mkdir()
    (root / "loras").mkdir()
    save_file(to_ldm_checkpoint(unet, vae, text), str(root / "checkpoints" / "tiny-sd15.safetensors"))
    up_u, down_u = _lowrank(1, 64, 64)
    up_t, down_t = _lowrank(2, 64, 64)
    kohya = {f"lora_unet_{UNET_MOD.replace('.', '_')}.lora_up.weight": up_u,
             f"lora_unet_{UNET_MOD.replace('.', '_')}.lora_down.weight": down_u,
             f"lora_unet_{UNET_MOD.replace('.', '_')}.alpha": torch.tensor(2.0),
             f"lora_te_text_model_{TE_MOD.replace('.', '_')}.lora_up.weight": up_t,
             f"lora_te_text_model_{TE_MOD.replace('.', '_')}.lora_down.weight": down_t}
    save_file(kohya, str(root / "loras" / "kohya.safetensors"))
    peft = {f"unet.{UNET_MOD}.lora_B.weight": up_u, f"unet.{UNET_MOD}.lora_A.weight": down_u}
    save_file(peft, str(root / "loras" / "peft.safetensors"))
    return root, (up_u, down_u), (up_t, down_t)


def test_kohya_lora_patches_unet_and_text_encoder_and_restores(models_dir) -> None:
    root, (up_u, down_u), (up_t, down_t) = models_dir
    with use_paths(Paths(model_roots=(root,))):
        model, clip, _ = N.CheckpointLoaderSimple.execute("tiny-sd15.safetensors").values
        model2, clip2 = N.LoraLoader.execute(model, clip, "kohya.safetensors", 0.5, 1.5).values
    unet = model.model_fn.unet
    weight = unet.get_submodule(UNET_MOD).weight
    te_weight = clip.encoders[0].get_submodule(TE_MOD).weight
    before, te_before = weight.detach().clone(), te_weight.detach().clone()
    assert model.extras["patches"] == [] and len(model2.extras["patches"]) == 1 and len(clip2.patches) == 1
    with applied(model2.extras["patches"] + clip2.patches):
        # W + strength * alpha / rank * up @ down (alpha 2, rank 4 for the UNet; no alpha = rank for the TE)
        torch.testing.assert_close(weight, before + 0.5 * (2.0 / 4) * up_u @ down_u)
        torch.testing.assert_close(te_weight, te_before + 1.5 * up_t @ down_t)
    assert torch.equal(weight, before) and torch.equal(te_weight, te_before)      # exactly restored
    enc_plain = clip.encode("a cat")[0][0]
    enc_lora = clip2.encode("a cat")[0][0]
    assert not torch.allclose(enc_plain, enc_lora) and torch.equal(clip.encode("a cat")[0][0], enc_plain)


def test_diffusers_style_lora_equals_kohya_style(models_dir) -> None:
    root, _, _ = models_dir
    from safetensors.torch import load_file

    with use_paths(Paths(model_roots=(root,))):
        model, _, _ = N.CheckpointLoaderSimple.execute("tiny-sd15.safetensors").values
    unet = model.model_fn.unet
    a, _ = lora_patches(load_file(str(root / "loras" / "peft.safetensors")), {"unet": unet}, {"unet": 1.0})
    b, _ = lora_patches(load_file(str(root / "loras" / "kohya.safetensors")), {"unet": unet}, {"unet": 1.0})
    assert a[0].module is b[0].module
    torch.testing.assert_close(a[0].delta() * (2.0 / 4), b[0].delta())   # kohya file has alpha 2 (scale 0.5)


def test_lora_for_another_architecture_is_a_clear_error(models_dir, tmp_path: Path) -> None:
    root, _, _ = models_dir
    up, down = _lowrank(3, 8, 8)
    save_file({"lora_unet_no_such_module.lora_up.weight": up, "lora_unet_no_such_module.lora_down.weight": down},
              str(root / "loras" / "wrong.safetensors"))
    with use_paths(Paths(model_roots=(root,))):
        model, _, _ = N.CheckpointLoaderSimple.execute("tiny-sd15.safetensors").values
        with pytest.raises(ValueError, match="no module 'no_such_module'"):
            N.LoraLoaderModelOnly.execute(model, "wrong.safetensors", 1.0)
