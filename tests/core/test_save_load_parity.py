"""Issue #14 items 8 and 9: the core SaveImage / LoadImage behave like ComfyUI's for the graphs and names
the editor produces. Graphs mix the classic pack ``packs/pixel_pack`` with the core nodes."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewstep.app.api import Paths
from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.registry import load_registry
from fewstep.nodes.core import nodes as N

PACKS = Path(__file__).parent / "packs"


@pytest.fixture
def env(tmp_path: Path) -> tuple[Executor, Paths]:
    registry = load_registry([PACKS], entry_points=False, builtin=False)
    registry.register_pack("core", [N.SaveImage, N.LoadImage], source="builtin", python_module="nodes")
    assert not registry.failures, registry.failures
    paths = Paths(input_dir=tmp_path / "input", output_dir=tmp_path / "output", temp_dir=tmp_path / "temp",
                  user_dir=tmp_path / "user")
    return Executor(registry, CacheSet("none"), paths), paths


def _save(executor: Executor, prefix: str, value: float = 0.25, label: str = "run") -> list[dict]:
    prompt = {"1": {"class_type": "SolidImage", "inputs": {"value": value, "width": 4, "height": 2, "label": label},
                    "_meta": {"title": "Source"}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}
    result = executor.execute(prompt, prompt_id="p")
    assert result.status == "success", result.error
    return result.outputs["2"]["images"]


def test_pixels_are_truncated_like_comfyui(env) -> None:
    """ComfyUI ``nodes.py::SaveImage.save_images``: ``np.clip(255. * i, 0, 255).astype(np.uint8)``."""
    executor, paths = env
    saved = _save(executor, "px", value=0.25)
    pixels = np.asarray(Image.open(paths.output_dir / saved[0]["filename"]))
    assert pixels.shape == (2, 4, 3) and pixels[0, 0, 0] == 63  # 63.75 truncated, not rounded to 64


@pytest.mark.parametrize("prefix", ["shot[1]", "a*b", "what?", "[x]"])
def test_prefixes_with_glob_characters_keep_counting(env, prefix: str) -> None:
    """ComfyUI ``folder_paths.py::get_save_image_path`` compares names as plain strings."""
    executor, paths = env
    names = [_save(executor, prefix)[0]["filename"] for _ in range(3)]
    assert names == [f"{prefix}_00001_.png", f"{prefix}_00002_.png", f"{prefix}_00003_.png"]
    assert len(list(paths.output_dir.iterdir())) == 3


def test_prefix_variables(env) -> None:
    """Server variables (``%width%``, ``%height%``, ``%year%``: get_save_image_path) and the editor's
    (``%date:FORMAT%``, ``%Node.widget%`` by class type or title: the frontend's applyTextReplacements)."""
    executor, paths = env
    today = datetime.date.today()
    saved = _save(executor, "%SolidImage.label%/%width%x%height%_%date:yyyy-MM-dd%_%year%_%Source.value%_%bad%",
                  label="cats/dogs")
    assert saved[0]["subfolder"] == "cats_dogs"
    assert saved[0]["filename"] == f"4x2_{today:%Y-%m-%d}_{today.year}_0.25_%bad%_00001_.png"
    assert (paths.output_dir / "cats_dogs" / saved[0]["filename"]).is_file()


def _write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((3, 5, 3), value, dtype=np.uint8)).save(path)


@pytest.mark.parametrize(("name", "where", "value"), [
    ("pasted/image.png", "input/pasted/image.png", 10),
    ("clipspace/clipspace-mask-123.png [input]", "input/clipspace/clipspace-mask-123.png", 20),
    ("ComfyUI_00001_.png [output]", "output/ComfyUI_00001_.png", 30),
    ("preview.png [temp]", "temp/preview.png", 40),
])
def test_load_image_accepts_the_editors_names(env, tmp_path: Path, name: str, where: str, value: int) -> None:
    """ComfyUI ``nodes.py::LoadImage``: ``get_annotated_filepath`` and a VALIDATE_INPUTS that accepts any
    existing file instead of the listed ones."""
    executor, _ = env
    _write_png(tmp_path / where, value)
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
              "2": {"class_type": "FirstPixel", "inputs": {"image": ["1", 0]}}}
    result = executor.execute(prompt, prompt_id="p")
    assert result.status == "success", result.error
    assert result.outputs["2"] == {"pixel": [value], "shape": [[1, 3, 5, 3]]}


@pytest.mark.parametrize("name", ["../secret.png", "../secret.png [output]", "missing.png [input]",
                                  "/etc/passwd [input]", "pasted/../../secret.png"])
def test_load_image_keeps_its_path_safety(env, tmp_path: Path, name: str) -> None:
    executor, _ = env
    _write_png(tmp_path / "secret.png", 99)
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
              "2": {"class_type": "FirstPixel", "inputs": {"image": ["1", 0]}}}
    result = executor.execute(prompt, prompt_id="p")
    assert result.status == "error"
    assert result.error["node_errors"]["1"]["errors"][0]["type"] == "custom_validation_failed"
    assert str(tmp_path) not in str(result.error)
