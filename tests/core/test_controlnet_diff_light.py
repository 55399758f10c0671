"""DiffControlNetLoader on real "difference" ControlNet files (weights stored as ControlNet - UNet, marked by a
``difference`` key, as ComfyUI reads them) and the light T2I-Adapter (TencentARC's Adapter_light layout) loaded
through ControlNetLoader, each against an independent computation."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sd_fixtures import tiny_sd15, to_ldm_checkpoint, to_ldm_unet
from test_comfy_graphs import controlnet_to_ldm, tiny_controlnet

from fewstep.app.api import Paths, use_paths

pytest.importorskip("diffusers")


def _diff_file(net, unet) -> dict:
    """The LDM-layout ControlNet with every weight it shares with the UNet stored as the difference."""
    full = controlnet_to_ldm(net)
    attn_up = [t.startswith("CrossAttn") for t in unet.config.up_block_types]
    base = {k.removeprefix("model.diffusion_model."): v for k, v in to_ldm_unet(unet.state_dict(), attn_up).items()}
    out, shared = {}, 0
    for key, value in full.items():
        name = key.removeprefix("control_model.")
        if name in base:
            value, shared = value - base[name], shared + 1
        out[key] = value.contiguous()
    assert shared > 20                                   # conv_in, time embedding, down and mid blocks
    out["difference"] = torch.tensor([])
    return out


def _light_original(widths: tuple[int, ...] = (32, 64, 128, 128), blocks: int = 2, cin: int = 3) -> dict:
    """Random weights in ComfyUI's Adapter_light names (1x1 in/out convolutions, resnets at a quarter width)."""
    g = torch.Generator().manual_seed(11)
    sd, prev = {}, cin * 64
    for level, width in enumerate(widths):
        inner = width // 4
        convs = {"in_conv": (inner, prev, 1), "out_conv": (width, inner, 1)}
        convs.update({f"body.{r}.{b}": (inner, inner, 3) for r in range(blocks) for b in ("block1", "block2")})
        for name, (o, i, k) in convs.items():
            sd[f"body.{level}.{name}.weight"] = torch.randn(o, i, k, k, generator=g) * (1.0 / (i * k * k)) ** 0.5
            sd[f"body.{level}.{name}.bias"] = torch.randn(o, generator=g) * 0.05
        prev = width
    return sd


def _light_reference(sd: dict, image: torch.Tensor) -> list[torch.Tensor]:
    """ComfyUI's Adapter_light forward, written out with functional convolutions: 8x pixel unshuffle; per level
    (2x2 average pool from the second on), 1x1 in, resnet blocks x + conv(relu(conv x)), 1x1 out."""
    x = F.pixel_unshuffle(image, 8)
    levels = len({k.split(".")[1] for k in sd})
    features = []
    for level in range(levels):
        p = f"body.{level}."
        if level:
            x = F.avg_pool2d(x, 2, 2)
        x = F.conv2d(x, sd[p + "in_conv.weight"], sd[p + "in_conv.bias"])
        blocks = len({m[1] for k in sd if (m := re.match(rf"body\.{level}\.body\.(\d+)\.", k))})
        for r in range(blocks):
            q = f"{p}body.{r}."
            h = F.relu(F.conv2d(x, sd[q + "block1.weight"], sd[q + "block1.bias"], padding=1))
            x = x + F.conv2d(h, sd[q + "block2.weight"], sd[q + "block2.bias"], padding=1)
        x = F.conv2d(x, sd[p + "out_conv.weight"], sd[p + "out_conv.bias"])
        features.append(x)
    return features


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    unet, vae, text = tiny_sd15()
    root = tmp_path_factory.mktemp("diffcn")
    for folder in ("checkpoints", "controlnet"):
        (root / folder).mkdir()
    save_file(to_ldm_checkpoint(unet, vae, text), str(root / "checkpoints" / "tiny-sd15.safetensors"))
    net = tiny_controlnet(unet)
    save_file(controlnet_to_ldm(net), str(root / "controlnet" / "cn-full.safetensors"))
    save_file(_diff_file(net, unet), str(root / "controlnet" / "cn-diff.safetensors"))
    light = _light_original()
    save_file(light, str(root / "controlnet" / "t2i-light.safetensors"))
    return root, net, light


def test_diff_controlnet_equals_the_full_one(files) -> None:
    from fewstep.nodes.core import nodes as N
    from fewstep.nodes.core import nodes_conditioning as C
    from fewstep.nodes.core.conditioning import ComposedGuider

    root, net, _ = files
    with use_paths(Paths(model_roots=(root,))):
        model, clip, _ = N.CheckpointLoaderSimple.execute("tiny-sd15.safetensors").values
        full = C.ControlNetLoader.execute("cn-full.safetensors").values[0]
        diff = C.DiffControlNetLoader.execute(model, "cn-diff.safetensors").values[0]
        same = C.DiffControlNetLoader.execute(model, "cn-full.safetensors").values[0]   # a full file loads as is
        with pytest.raises(ValueError, match="DiffControlNetLoader"):
            C.ControlNetLoader.execute("cn-diff.safetensors")
    want = net.state_dict()
    for loaded in (diff, same):
        got = loaded.model.state_dict()
        assert sorted(got) == sorted(want)
        for key in want:          # (a - b) + b in float32: equal to a within one rounding of the larger value
            torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-6)
    pos, neg = clip.encode("a cat"), clip.encode("")
    hint, x, sigma = torch.rand(1, 64, 64, 3), torch.randn(1, 4, 8, 8), torch.tensor(2.0)
    out = [ComposedGuider(model, *C.ControlNetApplyAdvanced.execute(pos, neg, cn, hint, 0.8, 0.0, 1.0).values, 3.0,
                          x)(x, sigma) for cn in (full, diff)]
    torch.testing.assert_close(out[1], out[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[0], ComposedGuider(model, pos, neg, 3.0, x)(x, sigma), atol=1e-4)


def test_diff_controlnet_for_another_model_is_refused(files, tmp_path) -> None:
    from fewstep.nodes.core.controlnet import load_controlnet

    root, _, _ = files
    other = torch.nn.Conv2d(4, 8, 3)                                   # a "UNet" whose conv_in has another shape
    other.state_dict = lambda: {"conv_in.weight": torch.zeros(8, 4, 3, 3)}
    with pytest.raises(ValueError, match="made for another model"):
        load_controlnet(root / "controlnet" / "cn-diff.safetensors", base_unet=other)


def test_light_t2i_adapter_is_comfyuis_adapter_light(files) -> None:
    from fewstep.nodes.core import nodes as N
    from fewstep.nodes.core import nodes_conditioning as C
    from fewstep.nodes.core.conditioning import ComposedGuider
    from fewstep.nodes.core.controlnet import T2IAdapter

    root, _, light = files
    with use_paths(Paths(model_roots=(root,))):
        model, clip, _ = N.CheckpointLoaderSimple.execute("tiny-sd15.safetensors").values
        adapter = C.ControlNetLoader.execute("t2i-light.safetensors").values[0]
    assert isinstance(adapter, T2IAdapter) and adapter.in_channels == 3
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = adapter.model(image)
    want = _light_reference(light, image)
    assert [f.shape for f in got] == [(1, 32, 8, 8), (1, 64, 4, 4), (1, 128, 2, 2), (1, 128, 1, 1)]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the features reach the UNet's encoder: same as calling the UNet with them directly
    pos = clip.encode("a cat")
    hint = image.permute(0, 2, 3, 1)
    x, sigma = torch.randn(1, 4, 8, 8), torch.tensor(3.0)
    guided = ComposedGuider(model, C.ControlNetApply.execute(pos, adapter, hint, 0.7).values[0], None, 1.0, x)
    t = model.schedule.timestep(sigma.reshape(1))
    with torch.no_grad():
        eps = model.model_fn.unet(x / (sigma**2 + 1) ** 0.5, t, encoder_hidden_states=pos[0][0],
                                  down_intrablock_additional_residuals=[f * 0.7 for f in want]).sample
    torch.testing.assert_close(guided(x, sigma), x - sigma * eps, rtol=1e-4, atol=1e-4)


def test_new_nodes_run_as_a_graph_through_the_engine(files, tmp_path) -> None:
    """A ComfyUI API graph with the nodes above, validated and run by the executor: a difference ControlNet and
    a light T2I-Adapter on the prompts, DualCFGGuider on GITS sigmas after AddNoise, and KSampler on an
    APG-patched model."""
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    def node(class_type: str, **inputs) -> dict:
        return {"class_type": class_type, "inputs": inputs}

    prompt = {
        "1": node("CheckpointLoaderSimple", ckpt_name="tiny-sd15.safetensors"),
        "2": node("CLIPTextEncode", text="a cat", clip=["1", 1]),
        "3": node("CLIPTextEncode", text="a dog", clip=["1", 1]),
        "4": node("CLIPTextEncode", text="blurry", clip=["1", 1]),
        "5": node("EmptyImage", width=64, height=64, batch_size=1, color=0x808080),
        "6": node("DiffControlNetLoader", model=["1", 0], control_net_name="cn-diff.safetensors"),
        "7": node("ControlNetApplyAdvanced", positive=["2", 0], negative=["4", 0], control_net=["6", 0],
                  image=["5", 0], strength=0.7, start_percent=0.0, end_percent=1.0),
        "8": node("ControlNetLoader", control_net_name="t2i-light.safetensors"),
        "9": node("ControlNetApply", conditioning=["3", 0], control_net=["8", 0], image=["5", 0], strength=0.5),
        "10": node("DualCFGGuider", model=["1", 0], cond1=["7", 0], cond2=["9", 0], negative=["7", 1],
                   cfg_conds=3.0, cfg_cond2_negative=2.0, style="nested"),
        "11": node("GITSScheduler", coeff=1.2, steps=2, denoise=1.0),
        "12": node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "13": node("RandomNoise", noise_seed=3),
        "14": node("AddNoise", model=["1", 0], noise=["13", 0], sigmas=["11", 0], latent_image=["12", 0]),
        "15": node("DisableNoise"),
        "16": node("KSamplerSelect", sampler_name="euler"),
        "17": node("SamplerCustomAdvanced", noise=["15", 0], guider=["10", 0], sampler=["16", 0], sigmas=["11", 0],
                   latent_image=["14", 0]),
        "18": node("APG", model=["1", 0], eta=0.0, norm_threshold=5.0, momentum=-0.5),
        "19": node("KSampler", model=["18", 0], seed=1, steps=2, cfg=6.0, sampler_name="euler", scheduler="normal",
                   positive=["2", 0], negative=["4", 0], latent_image=["17", 0], denoise=0.5),
        "20": node("OptimalStepsScheduler", model_type="FLUX", steps=4, denoise=1.0),
        "21": node("VAEDecode", samples=["19", 0], vae=["1", 2]),
        "22": node("SaveImage", images=["21", 0], filename_prefix="new-nodes"),
        "23": node("PreviewAny", source=["20", 0]),
    }
    root = files[0]
    paths = Paths(model_roots=(root,), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in")
    result = Executor(load_registry(entry_points=False), CacheSet(), paths).execute(prompt, prompt_id="p")
    assert result.status == "success", result.error
    assert len(result.outputs["22"]["images"]) == 1
