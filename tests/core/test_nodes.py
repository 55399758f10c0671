"""Core nodes: the default graph through the engine, PNG graph round trip, ComfyUI schema names, progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fewstep.app.api import ExecutionContext, InterruptedError_, Paths, reset_context, set_context, use_paths
from fewstep.nodes.core import nodes as N
from fewstep.nodes.core.image_io import graph_from_png, next_output_path
from fewstep.nodes.core.names import SAMPLER_NAMES, SCHEDULER_NAMES

ROOT = Path(__file__).resolve().parents[2]


def test_combo_names_are_the_library_dicts() -> None:
    from fewstep.nodes.core.samplers import SAMPLERS
    from fewstep.nodes.core.schedules import SCHEDULERS

    assert set(SAMPLER_NAMES) == set(SAMPLERS) and set(SCHEDULER_NAMES) == set(SCHEDULERS)


def test_ksampler_schema_follows_comfyui() -> None:
    schema = N.KSampler.define_schema()
    assert [i.name for i in schema.inputs] == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler",
                                                "positive", "negative", "latent_image", "denoise"]
    assert schema.input("seed").control_after_generate and schema.input("steps").default == 20
    assert [o.type for o in N.CheckpointLoaderSimple.define_schema().outputs] == ["MODEL", "CLIP", "VAE"]
    assert [o.name for o in N.SamplerCustomAdvanced.define_schema().outputs] == ["output", "denoised_output"]


def test_builtin_checkpoint_is_listed(tmp_path: Path) -> None:
    with use_paths(Paths(model_roots=(tmp_path,))):
        choices = N.CheckpointLoaderSimple.define_schema().input("ckpt_name").resolved_choices()
    assert choices[0] == "fewstep-tiny-teacher.safetensors"


def _executor(tmp_path: Path):
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "output", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "input")
    return Executor(load_registry(), CacheSet(), paths), paths


def test_default_graph_runs_through_the_engine_and_embeds_itself(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    prompt = json.loads((ROOT / "graphs" / "default.json").read_text())
    # the default graph is the shipped MLCM student at 4 steps (issue #5): loader, milestone scheduler, lcm
    assert prompt["4"]["inputs"]["student_name"] == "fewstep-mlcm-student.safetensors"
    assert prompt["20"]["inputs"]["steps"] == 4 and prompt["21"]["inputs"]["sampler_name"] == "lcm"
    workflow = json.loads((ROOT / "graphs" / "default.ui.json").read_text())
    executor, paths = _executor(tmp_path)
    events: list = []
    result = executor.execute(prompt, prompt_id="p1", extra_data={"extra_pnginfo": {"workflow": workflow}},
                              emit=lambda kind, data: events.append((kind, data)))
    assert result.status == "success", result.error
    saved = result.outputs["9"]["images"]
    assert saved == [{"filename": "fewstep_00001_.png", "subfolder": "", "type": "output"}]
    png = paths.output_dir / "fewstep_00001_.png"
    graphs = graph_from_png(png)
    assert graphs["prompt"]["20"]["inputs"]["steps"] == 4 and graphs["workflow"] == workflow
    steps = [d["value"] for kind, d in events if kind == "progress"]
    assert steps == [1, 2, 3, 4]
    # the image is not blank: the student draws objects on the teacher's dark background
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png), dtype=np.float32)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 10


def test_seed_determinism_and_interrupt(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    with use_paths(Paths(model_roots=(tmp_path,))):
        model, clip, _ = N.CheckpointLoaderSimple.execute("fewstep-tiny-teacher.safetensors").values
        pos = N.CLIPTextEncode.execute("two small white crosses", clip).values[0]
        neg = N.CLIPTextEncode.execute("", clip).values[0]
        latent = N.EmptyLatentImage.execute(128, 128, 1).values[0]
        run = lambda seed: N.KSampler.execute(model, seed, 3, 5.0, "euler_ancestral", "karras", pos, neg, latent,  # noqa: E731
                                              1.0).values[0]["samples"]
        a, b, c = run(1), run(1), run(2)
        assert torch.equal(a, b) and not torch.allclose(a, c)
        stop_after = []
        ctx = ExecutionContext("p", "3", "KSampler", {}, {}, report=lambda v, m, p, *info: stop_after.append(v),
                               is_interrupted=lambda: len(stop_after) >= 2)
        token = set_context(ctx)
        try:
            with pytest.raises(InterruptedError_):
                run(1)
        finally:
            reset_context(token)
        assert stop_after == [1, 2]


def test_save_image_counter_and_prefix_folders(tmp_path: Path) -> None:
    out = tmp_path / "output"
    images = torch.rand(2, 8, 8, 3)
    with use_paths(Paths(output_dir=out)):
        first = N.SaveImage.execute(images, "runs/cat", prompt={"1": {}}, extra_pnginfo=None).ui["images"]
        second = N.SaveImage.execute(images[:1], "runs/cat").ui["images"]
    assert [i["filename"] for i in first] == ["cat_00001_.png", "cat_00002_.png"]
    assert second == [{"filename": "cat_00003_.png", "subfolder": "runs", "type": "output"}]
    assert graph_from_png(out / "runs" / "cat_00001_.png") == {"prompt": {"1": {}}}
    with pytest.raises(ValueError, match="outside the output folder"):
        next_output_path(out, "../escape")


def test_load_image_gives_pixels_and_mask(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "input").mkdir()
    rgba = Image.new("RGBA", (4, 3), (255, 0, 0, 64))
    rgba.save(tmp_path / "input" / "a.png")
    with use_paths(Paths(input_dir=tmp_path / "input")):
        assert N.LoadImage.define_schema().input("image").resolved_choices() == ["a.png"]
        image, mask = N.LoadImage.execute("a.png").values
    assert image.shape == (1, 3, 4, 3) and torch.allclose(image[0, 0, 0], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(mask, torch.full((1, 3, 4), 1 - 64 / 255))


def test_image_scale_and_primitives() -> None:
    img = torch.rand(1, 10, 20, 3)
    assert N.ImageScale.execute(img, "bilinear", 8, 0, "disabled").values[0].shape == (1, 4, 8, 3)
    assert N.ImageScale.execute(img, "area", 6, 6, "center").values[0].shape == (1, 6, 6, 3)
    assert N.PrimitiveInt.execute(5).values == (5,) and N.PrimitiveString.execute("x").values == ("x",)


def test_ui_twin_converts_to_the_api_graph() -> None:
    from fewstep.app.registry import load_registry
    from fewstep.app.workflow import ui_to_api

    api = ui_to_api(json.loads((ROOT / "graphs" / "default.ui.json").read_text()), load_registry())
    ref = json.loads((ROOT / "graphs" / "default.json").read_text())
    assert {k: (v["class_type"], v["inputs"]) for k, v in api.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in ref.items()}
