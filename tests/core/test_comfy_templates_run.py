"""Issue #15's yardstick, opt-in: ComfyUI's official SD1.5 / SDXL core-node templates converted, validated and
run to an image by the engine, with tiny random models standing in for every file a template names.

    FEWSTEP_COMFY_TEMPLATES=/path/to/release-folder[:/another] pytest tests/core/test_comfy_templates_run.py
    FEWSTEP_TEMPLATE_SCALE=0.25 ...   # the same graphs at a quarter of their pixel sizes (CPU)

Each folder holds one release's ``comfyui-workflow-templates`` wheels (``pip download --no-deps``), as for
``python -m fewstep.bench.comfy_templates``. The templates are not vendored here, so without the variable
the test is skipped. Model files are chosen by the input that names them: checkpoints (tiny SDXL when the
name says "xl", else tiny SD1.5), ControlNets, ESRGAN-style upscalers, LoRAs, VAEs, textual-inversion
embeddings named in prompts, and small RGBA input images (alpha = the inpainting mask).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

FOLDERS = [Path(p) for p in os.environ.get("FEWSTEP_COMFY_TEMPLATES", "").split(os.pathsep) if p]
# FEWSTEP_TEMPLATE_SCALE=0.25 shrinks every pixel size and area coordinate of a template (multiples of 8): the
# same nodes and links at a size a CPU finishes (full-size area templates attend over ~14k latent tokens).
SCALE = float(os.environ.get("FEWSTEP_TEMPLATE_SCALE", "1"))
SIZE_KEYS = {"width": 64, "height": 64, "target_width": 64, "target_height": 64, "x": 0, "y": 0}
pytestmark = pytest.mark.skipif(not FOLDERS, reason="set FEWSTEP_COMFY_TEMPLATES to folders of template wheels")
UNET_MOD = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q"


def _cases() -> list[Any]:
    if not FOLDERS:
        return []
    from fewstep.bench.comfy_templates import SD_BASICS, _workflows, release_label

    return [pytest.param(folder, name, workflow, id=f"{release_label(folder)}-{name}")
            for folder in FOLDERS for name, workflow in _workflows(folder) if name in SD_BASICS]


def _save(state: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, str(path))


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """One file per kind, in safetensors; copied (or re-saved as pickle) under each name a template uses."""
    from sd_fixtures import tiny_sd15, tiny_sdxl, to_ldm_checkpoint, to_ldm_unet, to_ldm_vae, to_open_clip
    from spandrel.architectures.ESRGAN import ESRGAN
    from test_comfy_graphs import tiny_controlnet, tiny_t2i_original

    root = tmp_path_factory.mktemp("tiny")
    unet, vae, text = tiny_sd15()
    files = {"sd15": root / "sd15.safetensors", "sdxl": root / "sdxl.safetensors", "cn": root / "cn.safetensors",
             "esrgan": root / "esrgan.safetensors", "lora": root / "lora.safetensors", "vae": root / "vae.safetensors"}
    _save(to_ldm_checkpoint(unet, vae, text), files["sd15"])
    xl_unet, clip_l, clip_g = tiny_sdxl()
    xl = to_ldm_unet(xl_unet.state_dict(), [t.startswith("CrossAttn") for t in xl_unet.config.up_block_types])
    xl.update(to_ldm_vae(vae.state_dict(), 4))
    xl.update({"conditioner.embedders.0.transformer.text_model." + k.removeprefix("text_model."): v
               for k, v in clip_l.state_dict().items()})
    xl.update({"conditioner.embedders.1.model." + k: v for k, v in to_open_clip(clip_g).items()})
    _save(xl, files["sdxl"])
    from test_sd2 import tiny_sd2_checkpoint
    from test_sdxl_refiner import tiny_refiner_checkpoint

    for kind, channels, v_pred in (("sd2-v", 4, True), ("sd2-inpaint", 9, False)):
        files[kind] = root / f"{kind}.safetensors"
        _save(tiny_sd2_checkpoint(channels, v_pred)[0], files[kind])

    files["sdxl-refiner"] = root / "sdxl-refiner.safetensors"
    _save(tiny_refiner_checkpoint()[0], files["sdxl-refiner"])
    from diffusers import UNet2DConditionModel

    torch.manual_seed(8)
    files["sd15-inpaint"] = root / "sd15-inpaint.safetensors"        # 9 input channels: latent, mask, image
    _save(to_ldm_checkpoint(UNet2DConditionModel(**{**unet.config, "in_channels": 9}).eval(), vae, text),
          files["sd15-inpaint"])
    _save(tiny_controlnet(unet).state_dict(), files["cn"])
    files["t2i"] = root / "t2i.safetensors"
    _save(tiny_t2i_original()[1], files["t2i"])
    _save(ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2).state_dict(), files["esrgan"])
    g = torch.Generator().manual_seed(5)
    _save({f"unet.{UNET_MOD}.lora_B.weight": torch.randn(64, 4, generator=g) * 0.1,
           f"unet.{UNET_MOD}.lora_A.weight": torch.randn(4, 64, generator=g) * 0.1}, files["lora"])
    _save(to_ldm_vae(vae.state_dict(), 4), files["vae"])
    return files


FILE_INPUTS = {"ckpt_name": "checkpoints", "control_net_name": "controlnet", "model_name": "upscale_models",
               "lora_name": "loras", "vae_name": "vae"}


def _checkpoint_kind(name: str) -> str:
    if "v2-" in name or "512-inpainting" in name:                    # SD 2.x: 768-v or 512 inpainting
        return "sd2-inpaint" if "inpaint" in name else "sd2-v"
    if "xl" in name:
        return "sdxl-refiner" if "refiner" in name else "sdxl"
    return "sd15-inpaint" if "inpaint" in name else "sd15"


def _scaled(prompt: dict[str, Any], scale: float) -> None:
    """Multiply every pixel size / area coordinate input by ``scale`` (rounded to a multiple of 8, floored at
    the key's minimum); links and every other input stay."""
    for node in prompt.values():
        for key, minimum in SIZE_KEYS.items():
            value = node["inputs"].get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                node["inputs"][key] = max(minimum, round(value * scale / 8) * 8)


def _provide(prompt: dict[str, Any], models: Path, inputs: Path, files: dict[str, Path]) -> None:
    from PIL import Image

    for node in prompt.values():
        for key, value in node["inputs"].items():
            if not isinstance(value, str):
                continue
            if key in FILE_INPUTS:
                folder = FILE_INPUTS[key]
                kind = {"controlnet": "t2i" if "t2iadapter" in value.lower() else "cn", "upscale_models": "esrgan",
                        "loras": "lora", "vae": "vae"}.get(folder, _checkpoint_kind(value.lower()))
                target = models / folder / value
                target.parent.mkdir(parents=True, exist_ok=True)
                if value.endswith(".safetensors"):
                    shutil.copy(files[kind], target)
                else:                                          # a pickle name (.pth, .ckpt): same tensors
                    _save(load_file(str(files[kind])), target)
            elif key == "image" and node["class_type"] == "LoadImage":
                target = inputs / value
                target.parent.mkdir(parents=True, exist_ok=True)
                pixels = (torch.rand(96, 128, 4) * 255).byte().numpy()
                pixels[..., 3] = 255
                pixels[24:72, 32:96, 3] = 0                     # a transparent hole: LoadImage's mask
                Image.fromarray(pixels, "RGBA").save(target)
            elif key == "text":
                for name in re.findall(r"embedding:([\w.\-]+)", value):
                    stem = name.removesuffix(".pt").removesuffix(".safetensors")
                    vectors = torch.randn(2, 64)
                    _save({"emb_params": vectors, "clip_l": vectors.clone(), "clip_g": vectors.clone()},
                          models / "embeddings" / f"{stem}.safetensors")


@pytest.mark.parametrize(("folder", "name", "workflow"), _cases())
def test_template_runs_to_an_image(folder: Path, name: str, workflow: dict, tiny_files, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from fewstep.app.api import Paths
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry
    from fewstep.app.workflow import ui_to_api

    monkeypatch.setenv("FEWSTEP_ALLOW_PICKLE", "1")               # some templates name .pth upscalers
    registry = load_registry(entry_points=False)
    prompt = ui_to_api(workflow, registry)
    if SCALE != 1:
        _scaled(prompt, SCALE)
    models, inputs = tmp_path / "models", tmp_path / "input"
    _provide(prompt, models, inputs, tiny_files)
    paths = Paths(model_roots=(models,), input_dir=inputs, output_dir=tmp_path / "out", temp_dir=tmp_path / "temp")
    result = Executor(registry, CacheSet(), paths).execute(prompt, prompt_id=name)
    error = result.error or {}
    assert result.status == "success", f"{error.get('node_type')}: {error.get('exception_message')}"
    images = [img for ui in result.outputs.values() for img in (ui or {}).get("images", [])]
    assert images, f"{name}: no image saved or previewed"
