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
