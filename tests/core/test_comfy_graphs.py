"""Everyday SD1.5 graphs of ComfyUI core nodes through the engine on tiny random models (issue #15): hires
fix with clip skip, area composition and a ControlNet; in/outpainting with an ESRGAN-style upscale model;
an LCM-LoRA with ModelSamplingDiscrete(lcm), SDXL-Turbo's scheduler and SamplerCustom with RescaleCFG.
Plus the ControlNet loader (both file layouts) and the spandrel upscaler against their reference modules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import tiny_sd15, to_ldm_checkpoint, to_ldm_unet

from fewstep.app.api import Paths, use_paths

pytest.importorskip("diffusers")
pytest.importorskip("spandrel")
UNET_MOD = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q"   # a Linear [64, 64]


def tiny_controlnet(unet):
    from diffusers import ControlNetModel

    torch.manual_seed(3)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 16, 32)).eval()
    with torch.no_grad():             # zero convolutions start at 0: perturb so the residuals are not zero
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net


def controlnet_to_ldm(net) -> dict:
    """diffusers ControlNet names -> the original LDM layout under ``control_model.``."""
    sd = net.state_dict()
    body = to_ldm_unet({k: v for k, v in sd.items() if not k.startswith("controlnet_")}, [])
    out = {"control_model." + k.removeprefix("model.diffusion_model."): v for k, v in body.items()}
    for key, value in sd.items():
        if m := re.match(r"controlnet_down_blocks\.(\d+)\.(.+)$", key):
            out[f"control_model.zero_convs.{m[1]}.0.{m[2]}"] = value
        elif m := re.match(r"controlnet_mid_block\.(.+)$", key):
            out[f"control_model.middle_block_out.0.{m[1]}"] = value
        elif m := re.match(r"controlnet_cond_embedding\.conv_in\.(.+)$", key):
            out[f"control_model.input_hint_block.0.{m[1]}"] = value
        elif m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)$", key):
            out[f"control_model.input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"] = value
        elif m := re.match(r"controlnet_cond_embedding\.conv_out\.(.+)$", key):
            out[f"control_model.input_hint_block.14.{m[1]}"] = value
    return {k: v.contiguous() for k, v in out.items()}


def tiny_t2i_original():
    """A one-channel (depth-style) full T2I-Adapter for the tiny UNet, in TencentARC's original names."""
    from diffusers import T2IAdapter

    torch.manual_seed(6)
    net = T2IAdapter(in_channels=1, channels=[32, 64, 128, 128], num_res_blocks=2, downscale_factor=8,
                     adapter_type="full_adapter").eval()
    out = {}
    for key, value in net.state_dict().items():
        if m := re.match(r"adapter\.body\.(\d+)\.resnets\.(\d+)\.(.+)$", key):
            out[f"body.{2 * int(m[1]) + int(m[2])}.{m[3]}"] = value
        elif m := re.match(r"adapter\.body\.(\d+)\.in_conv\.(.+)$", key):
            out[f"body.{2 * int(m[1])}.in_conv.{m[2]}"] = value
        else:
            out[key.removeprefix("adapter.")] = value
    return net, {k: v.contiguous() for k, v in out.items()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from spandrel.architectures.ESRGAN import ESRGAN

    unet, vae, text = tiny_sd15()
    root = tmp_path_factory.mktemp("models")
    for folder in ("checkpoints", "controlnet", "upscale_models", "loras"):
        (root / folder).mkdir()
    save_file(to_ldm_checkpoint(unet, vae, text), str(root / "checkpoints" / "tiny-sd15.safetensors"))
    net = tiny_controlnet(unet)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(root / "controlnet" / "cn-diffusers.safetensors"))
    save_file(controlnet_to_ldm(net), str(root / "controlnet" / "cn-ldm.safetensors"))
    save_file(tiny_t2i_original()[1], str(root / "controlnet" / "t2iadapter_depth.safetensors"))
    torch.manual_seed(4)
    esrgan = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2).eval()
    save_file({k: v.contiguous() for k, v in esrgan.state_dict().items()}, str(root / "upscale_models" / "x2.safetensors"))
    g = torch.Generator().manual_seed(5)
    up, down = torch.randn(64, 4, generator=g) * 0.1, torch.randn(4, 64, generator=g) * 0.1
    save_file({f"unet.{UNET_MOD}.lora_B.weight": up, f"unet.{UNET_MOD}.lora_A.weight": down},
              str(root / "loras" / "lcm-lora.safetensors"))
    return root, net, esrgan


def test_controlnet_file_layouts_load_the_same_network(models) -> None:
    from fewstep.nodes.core import nodes_conditioning as C

    root, net, _ = models
    with use_paths(Paths(model_roots=(root,))):
        a = C.ControlNetLoader.execute("cn-diffusers.safetensors").values[0]
        b = C.ControlNetLoader.execute("cn-ldm.safetensors").values[0]
    want = net.state_dict()
    for loaded in (a, b):
        got = loaded.model.state_dict()
        assert sorted(got) == sorted(want)
        assert all(torch.equal(got[k].float(), want[k].float()) for k in want)


def test_controlnet_residuals_reach_the_unet(models) -> None:
    from fewstep.nodes.core import nodes as N
    from fewstep.nodes.core import nodes_conditioning as C
    from fewstep.nodes.core.conditioning import ComposedGuider

    root, net, _ = models
    with use_paths(Paths(model_roots=(root,))):
        model, clip, _ = N.CheckpointLoaderSimple.execute("tiny-sd15.safetensors").values
        control = C.ControlNetLoader.execute("cn-ldm.safetensors").values[0]
    pos, neg = clip.encode("a cat"), clip.encode("")
    hint = torch.rand(1, 64, 64, 3)
    x, sigma = torch.randn(1, 4, 8, 8), torch.tensor(3.0)
    plain = model(x, sigma, {"context": pos[0][0]})
    p1, n1 = C.ControlNetApplyAdvanced.execute(pos, neg, control, hint, 1.0, 0.0, 1.0).values
    with_cn = ComposedGuider(model, p1, n1, 1.0, x)(x, sigma)
    # the same residuals computed here with diffusers' modules directly
    t = model.schedule.timestep(sigma.reshape(1))
    x_in = x / (sigma**2 + 1) ** 0.5
    with torch.no_grad():
        down, mid = net(x_in, t, encoder_hidden_states=pos[0][0], controlnet_cond=hint.permute(0, 3, 1, 2),
                        return_dict=False)
        eps = model.model_fn.unet(x_in, t, encoder_hidden_states=pos[0][0], down_block_additional_residuals=down,
                                  mid_block_additional_residual=mid).sample
    torch.testing.assert_close(with_cn, x - sigma * eps, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(with_cn, plain, atol=1e-4)
    # outside its percent range the ControlNet is off
    p2, n2 = C.ControlNetApplyAdvanced.execute(pos, neg, control, hint, 1.0, 0.9, 1.0).values
    torch.testing.assert_close(ComposedGuider(model, p2, n2, 1.0, x)(x, torch.tensor(10.0)),
                               model(x, torch.tensor(10.0), {"context": pos[0][0]}))


def test_t2i_adapter_features_reach_the_unet(models) -> None:
    from fewstep.nodes.core import nodes as N
    from fewstep.nodes.core import nodes_conditioning as C
    from fewstep.nodes.core.conditioning import ComposedGuider

    root = models[0]
    net, _ = tiny_t2i_original()
    with use_paths(Paths(model_roots=(root,))):
        model, clip, _ = N.CheckpointLoaderSimple.execute("tiny-sd15.safetensors").values
        adapter = C.ControlNetLoader.execute("t2iadapter_depth.safetensors").values[0]
    assert all(torch.equal(a, b) for a, b in zip(adapter.model.state_dict().values(), net.state_dict().values(),
                                                 strict=True))
    pos = clip.encode("a cat")
    hint = torch.rand(1, 64, 64, 3)
    x, sigma = torch.randn(1, 4, 8, 8), torch.tensor(3.0)
    p1 = C.ControlNetApply.execute(pos, adapter, hint, 0.5).values[0]
    got = ComposedGuider(model, p1, None, 1.0, x)(x, sigma)
    t = model.schedule.timestep(sigma.reshape(1))
    x_in = x / (sigma**2 + 1) ** 0.5
    with torch.no_grad():            # depth adapters read one grey channel: the mean of RGB
        features = [f * 0.5 for f in net(hint.permute(0, 3, 1, 2).mean(1, keepdim=True))]
        eps = model.model_fn.unet(x_in, t, encoder_hidden_states=pos[0][0],
                                  down_intrablock_additional_residuals=features).sample
    torch.testing.assert_close(got, x - sigma * eps, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, model(x, sigma, {"context": pos[0][0]}), atol=1e-4)


def test_upscale_model_node_is_the_spandrel_network(models) -> None:
    from fewstep.nodes.core import nodes_image as I
    from fewstep.nodes.core.image_ops import upscale_tiled

    root, _, esrgan = models
    image = torch.rand(1, 12, 20, 3)
    with use_paths(Paths(model_roots=(root,))):
        upscaler = I.UpscaleModelLoader.execute("x2.safetensors").values[0]
        out = I.ImageUpscaleWithModel.execute(upscaler, image).values[0]
    with torch.no_grad():
        want = esrgan(image.permute(0, 3, 1, 2)).clamp(0, 1).permute(0, 2, 3, 1)
    assert out.shape == (1, 24, 40, 3)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    tiled = upscale_tiled(upscaler, image, tile=8, overlap=4)        # overlapping tiles: close, not exact
    assert tiled.shape == out.shape and (tiled - out).abs().mean() < 0.05


def _run(models, prompt: dict, tmp_path: Path) -> dict:
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    root = models[0]
    paths = Paths(model_roots=(root,), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in")
    result = Executor(load_registry(entry_points=False), CacheSet(), paths).execute(prompt, prompt_id="p")
    assert result.status == "success", result.error
    return result.outputs


def _node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def _base() -> dict:
    return {"1": _node("CheckpointLoaderSimple", ckpt_name="tiny-sd15.safetensors"),
            "2": _node("CLIPSetLastLayer", clip=["1", 1], stop_at_clip_layer=-2),
            "3": _node("CLIPTextEncode", text="a (red:1.2) cat", clip=["2", 0]),
            "4": _node("CLIPTextEncode", text="blurry", clip=["2", 0])}


def test_hires_fix_with_area_composition_and_controlnet(models, tmp_path: Path) -> None:
    prompt = _base() | {
        "5": _node("CLIPTextEncode", text="a dog", clip=["2", 0]),
        "6": _node("ConditioningSetArea", conditioning=["5", 0], width=64, height=128, x=64, y=0, strength=1.0),
        "7": _node("ConditioningCombine", conditioning_1=["3", 0], conditioning_2=["6", 0]),
        "8": _node("EmptyImage", width=64, height=64, batch_size=1, color=0xFFFFFF),
        "9": _node("ImagePadForOutpaint", image=["8", 0], left=32, top=32, right=32, bottom=32, feathering=0),
        "10": _node("Canny", image=["9", 0], low_threshold=0.1, high_threshold=0.2),
        "11": _node("ControlNetLoader", control_net_name="cn-ldm.safetensors"),
        "12": _node("ControlNetApplyAdvanced", positive=["7", 0], negative=["4", 0], control_net=["11", 0],
                    image=["10", 0], strength=0.8, start_percent=0.0, end_percent=0.8),
        "13": _node("EmptyLatentImage", width=128, height=128, batch_size=1),
        "14": _node("KSampler", model=["1", 0], seed=1, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal",
                    positive=["12", 0], negative=["12", 1], latent_image=["13", 0], denoise=1.0),
        "15": _node("LatentUpscaleBy", samples=["14", 0], upscale_method="bislerp", scale_by=1.5),
        "16": _node("KSampler", model=["1", 0], seed=2, steps=2, cfg=5.0, sampler_name="dpmpp_2m", scheduler="karras",
                    positive=["7", 0], negative=["4", 0], latent_image=["15", 0], denoise=0.5),
        "17": _node("VAEDecode", samples=["16", 0], vae=["1", 2]),
        "18": _node("SaveImage", images=["17", 0], filename_prefix="hires"),
    }
    out = _run(models, prompt, tmp_path)
    from PIL import Image

    saved = tmp_path / "out" / out["18"]["images"][0]["filename"]
    assert Image.open(saved).size == (192, 192)


def test_inpaint_outpaint_and_esrgan(models, tmp_path: Path) -> None:
    prompt = _base() | {
        "5": _node("EmptyImage", width=64, height=64, batch_size=1, color=0x3366CC),
        "6": _node("ImagePadForOutpaint", image=["5", 0], left=32, top=0, right=32, bottom=0, feathering=8),
        "7": _node("VAEEncodeForInpaint", pixels=["6", 0], vae=["1", 2], mask=["6", 1], grow_mask_by=6),
        "8": _node("KSampler", model=["1", 0], seed=1, steps=2, cfg=4.0, sampler_name="euler_ancestral",
                   scheduler="simple", positive=["3", 0], negative=["4", 0], latent_image=["7", 0], denoise=1.0),
        "9": _node("InpaintModelConditioning", positive=["3", 0], negative=["4", 0], vae=["1", 2], pixels=["6", 0],
                   mask=["6", 1], noise_mask=True),
        "10": _node("KSampler", model=["1", 0], seed=1, steps=2, cfg=4.0, sampler_name="ddim", scheduler="normal",
                    positive=["9", 0], negative=["9", 1], latent_image=["9", 2], denoise=0.8),
        "11": _node("VAEDecode", samples=["8", 0], vae=["1", 2]),
        "12": _node("VAEDecode", samples=["10", 0], vae=["1", 2]),
        "13": _node("ImageBatch", image1=["11", 0], image2=["12", 0]),
        "14": _node("UpscaleModelLoader", model_name="x2.safetensors"),
        "15": _node("ImageUpscaleWithModel", upscale_model=["14", 0], image=["13", 0]),
        "16": _node("ImageScaleToTotalPixels", image=["15", 0], upscale_method="bilinear", megapixels=0.02,
                    resolution_steps=8),
        "17": _node("SaveImage", images=["16", 0], filename_prefix="inpaint"),
        "18": _node("GetImageSize", image=["16", 0]),
        "19": _node("PreviewAny", source=["18", 0]),
    }
    out = _run(models, prompt, tmp_path)
    assert len(out["17"]["images"]) == 2
    assert int(out["19"]["text"][0]) % 8 == 0


def test_lcm_lora_with_model_sampling_lcm_and_turbo_custom_sampling(models, tmp_path: Path) -> None:
    prompt = _base() | {
        "5": _node("LoraLoaderModelOnly", model=["1", 0], lora_name="lcm-lora.safetensors", strength_model=1.0),
        "6": _node("ModelSamplingDiscrete", model=["5", 0], sampling="lcm", zsnr=False),
        "7": _node("EmptyLatentImage", width=64, height=64, batch_size=2),
        "8": _node("KSampler", model=["6", 0], seed=3, steps=4, cfg=1.0, sampler_name="lcm", scheduler="sgm_uniform",
                   positive=["3", 0], negative=["4", 0], latent_image=["7", 0], denoise=1.0),
        "9": _node("RescaleCFG", model=["1", 0], multiplier=0.7),
        "10": _node("SDTurboScheduler", model=["9", 0], steps=2, denoise=1.0),
        "11": _node("SamplerDPMPP_2M_SDE", solver_type="heun", eta=1.0, s_noise=1.0, noise_device="cpu"),
        "12": _node("SamplerCustom", model=["9", 0], add_noise=True, noise_seed=4, cfg=3.0, positive=["3", 0],
                    negative=["4", 0], sampler=["11", 0], sigmas=["10", 0], latent_image=["7", 0]),
        "13": _node("LatentFromBatch", samples=["12", 0], batch_index=1, length=1),
        "14": _node("VAEDecode", samples=["8", 0], vae=["1", 2]),
        "15": _node("VAEDecode", samples=["13", 0], vae=["1", 2]),
        "16": _node("SaveImage", images=["14", 0], filename_prefix="lcm"),
        "17": _node("SaveImage", images=["15", 0], filename_prefix="turbo"),
    }
    out = _run(models, prompt, tmp_path)
    assert len(out["16"]["images"]) == 2 and len(out["17"]["images"]) == 1


def test_inpainting_unet_gets_mask_and_masked_latent(tmp_path: Path) -> None:
    from diffusers import UNet2DConditionModel

    from fewstep.nodes.core import nodes as N
    from fewstep.nodes.core import nodes_latent as L

    unet, vae, text = tiny_sd15()
    torch.manual_seed(8)
    unet9 = UNet2DConditionModel(**{**unet.config, "in_channels": 9}).eval()   # SD inpainting: 4 + 1 + 4
    (tmp_path / "checkpoints").mkdir()
    save_file(to_ldm_checkpoint(unet9, vae, text), str(tmp_path / "checkpoints" / "inpaint.safetensors"))
    with use_paths(Paths(model_roots=(tmp_path,))):
        model, clip, vae_link = N.CheckpointLoaderSimple.execute("inpaint.safetensors").values
    pixels, mask = torch.rand(1, 64, 64, 3), torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    pos, neg, latent = L.InpaintModelConditioning.execute(clip.encode("a cat"), clip.encode(""), vae_link, pixels,
                                                          mask, True).values
    seen = []
    hook = model.model_fn.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        out = N.KSampler.execute(model, 1, 1, 3.0, "euler", "normal", pos, neg, latent, 1.0).values[0]["samples"]
    finally:
        hook.remove()
    x_unet = seen[0]                                    # CFG batch of 2: [x_in | mask | masked-image latent]
    assert x_unet.shape == (2, 9, 8, 8)
    torch.testing.assert_close(x_unet[:, 4:5], torch.nn.functional.interpolate(mask[:, None], size=(8, 8),
                                                                               mode="bilinear").expand(2, -1, -1, -1))
    torch.testing.assert_close(x_unet[:, 5:], pos[0][1]["concat_latent_image"].expand(2, -1, -1, -1))
    # the unmasked left half keeps the image's latent (noise mask), the right half is regenerated
    torch.testing.assert_close(out[..., :3], latent["samples"][..., :3], rtol=1e-4, atol=1e-4)
