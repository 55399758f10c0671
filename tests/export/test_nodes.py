"""The export pack's nodes through the engine: ComfyUI's names and ui entries, files under output/ with the
graph inside, round trips through LoadVideo / Load3D, and clear errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from fewstep.app.api import Paths, use_paths
from fewstep.nodes.core.mesh_io import read_glb, read_mesh_metadata
from fewstep.nodes.core.video import Video
from fewstep.nodes.core.video_io import load_video, save_video
from fewstep.nodes.export import nodes as X

pytest.importorskip("av")
pytest.importorskip("trimesh")


def _executor(tmp_path: Path) -> tuple[Any, Paths]:
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "output", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "input")
    return Executor(load_registry(), CacheSet(), paths), paths


def _run(tmp_path: Path, prompt: dict, workflow: dict | None = None) -> tuple[Any, Paths]:
    executor, paths = _executor(tmp_path)
    extra = {"extra_pnginfo": {"workflow": workflow}} if workflow is not None else {}
    return executor.execute(prompt, prompt_id="p", extra_data=extra, emit=lambda kind, data: None), paths


def _frames_graph(save_inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 6, "color": 0xFF8000}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 12}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], **save_inputs}},
    }


def test_comfyui_save_video_graph_writes_mp4_with_the_graph_and_preview_entry(tmp_path: Path) -> None:
    # exactly ComfyUI v0.8's SaveVideo inputs: our extra options are optional
    prompt = _frames_graph({"filename_prefix": "video/ComfyUI", "format": "auto", "codec": "auto"})
    result, paths = _run(tmp_path, prompt, workflow={"nodes": [1, 2, 3]})
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"images": [{"filename": "ComfyUI_00001_.mp4", "subfolder": "video",
                                               "type": "output"}], "animated": [True]}
    clip = load_video(paths.output_dir / "video" / "ComfyUI_00001_.mp4")
    assert (clip.num_frames, clip.height, clip.width, clip.fps) == (6, 24, 32, 12)
    assert json.loads(clip.metadata["prompt"]) == prompt and json.loads(clip.metadata["workflow"]) == {"nodes": [1, 2, 3]}
    # the colour survives H.264: 0xFF8000 is (1.0, 0.5, 0.0); 4:2:0 on a flat frame is nearly exact
    torch.testing.assert_close(clip.frames.mean(dim=(0, 1, 2)), torch.tensor([1.0, 128 / 255, 0.0]), atol=0.02,
                               rtol=0)
    again, _ = _run(tmp_path, prompt)  # the counter moves on as SaveImage's does
    assert again.outputs["3"]["images"][0]["filename"] == "ComfyUI_00002_.mp4"


@pytest.mark.parametrize(("fmt", "codec", "key", "suffix"), [
    ("webm", "vp9", "images", ".webm"), ("auto", "vp9", "images", ".webm"), ("webp", "auto", "images", ".webp"),
    ("png", "auto", "images", ".png"), ("gif", "auto", "video", ".gif"),
])
def test_save_video_formats_and_ui_keys(tmp_path: Path, fmt: str, codec: str, key: str, suffix: str) -> None:
    result, paths = _run(tmp_path, _frames_graph({"filename_prefix": "clip", "format": fmt, "codec": codec}))
    assert result.status == "success", result.error
    item = result.outputs["3"][key][0]
    assert item["filename"] == f"clip_00001_{suffix}" and item["type"] == "output"
    assert load_video(paths.output_dir / item["filename"]).num_frames == 6


def test_frames_format_lists_every_frame_for_the_editor(tmp_path: Path) -> None:
    result, paths = _run(tmp_path, _frames_graph({"filename_prefix": "runs/seq", "format": "frames", "codec": "auto"}))
    assert result.status == "success", result.error
    items = result.outputs["3"]["images"]
    assert [i["filename"] for i in items] == [f"frame_0000{k}.png" for k in range(6)]
    assert {i["subfolder"] for i in items} == {"runs/seq_00001_"}
    assert load_video(paths.output_dir / "runs" / "seq_00001_").fps == 12


def test_load_video_and_components_read_back_a_saved_clip(tmp_path: Path) -> None:
    source = Video(torch.rand(5, 16, 16, 3, generator=torch.Generator().manual_seed(0)), 8, {"prompt": "{}"})
    save_video(source, tmp_path / "input" / "clip.webp", "webp", lossless=True)
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "clip.webp"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": ["2", 2]}},
        "4": {"class_type": "SaveAnimatedPNG", "inputs": {"images": ["2", 0], "filename_prefix": "back", "fps": 8.0,
                                                          "compress_level": 1}},
    }
    result, paths = _run(tmp_path, prompt)
    assert result.status == "success", result.error
    assert result.outputs["4"] == {"images": [{"filename": "back_00001_.png", "subfolder": "", "type": "output"}],
                                   "animated": [True]}
    back = load_video(paths.output_dir / "back_00001_.png")
    assert back.num_frames == 5 and back.fps == 8
    assert float((back.frames - source.frames).abs().max()) <= 1 / 255 + 1e-6   # lossless WebP, then PNG
    with use_paths(paths):
        assert X.LoadVideo.define_schema().input("file").resolved_choices() == ["clip.webp"]


def test_save_animated_webp_as_comfyui(tmp_path: Path) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 3, "color": 255}},
              "2": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["1", 0], "filename_prefix": "ComfyUI",
                                                                 "fps": 6.0, "lossless": True, "quality": 80,
                                                                 "method": "default"}}}
    result, paths = _run(tmp_path, prompt)
    assert result.status == "success", result.error
    assert result.outputs["2"]["animated"] == [True]
    clip = load_video(paths.output_dir / result.outputs["2"]["images"][0]["filename"])
    assert clip.num_frames == 3 and clip.fps == 6 and json.loads(clip.metadata["prompt"]) == prompt


def test_mesh_graph_saves_glb_with_graph_and_3d_entry(tmp_path: Path) -> None:
    prompt = {"1": {"class_type": "MeshFromPrimitive", "inputs": {"shape": "sphere", "resolution": 20, "size": 0.6,
                                                                  "colour": "red"}},
              "2": {"class_type": "SaveGLB", "inputs": {"mesh": ["1", 0], "filename_prefix": "mesh/ComfyUI"}},
              "3": {"class_type": "Preview3D", "inputs": {"model_file": "", "mesh": ["1", 0]}}}
    result, paths = _run(tmp_path, prompt)
    assert result.status == "success", result.error
    assert result.outputs["2"] == {"3d": [{"filename": "ComfyUI_00001_.glb", "subfolder": "mesh", "type": "output"}]}
    glb = paths.output_dir / "mesh" / "ComfyUI_00001_.glb"
    assert json.loads(read_glb(glb)[0]["asset"]["extras"]["prompt"]) == prompt
    # Preview3D's ui is ComfyUI's {"result": [path in output/, camera_info, bg_image]}
    shown = result.outputs["3"]["result"][0]
    assert shown == "preview3d/fewstep_00001_.glb" and (paths.output_dir / shown).is_file()
    assert read_mesh_metadata(paths.output_dir / shown)["prompt"] == json.dumps(prompt)


def test_preview3d_of_a_saved_file_and_its_errors(tmp_path: Path) -> None:
    executor, paths = _executor(tmp_path)
    with use_paths(paths):
        (paths.output_dir / "mesh").mkdir(parents=True)
        X.SaveGLB.execute(X.MeshFromPrimitive.execute("cube", 12, 0.5, "grey").values[0], "mesh/a")
        assert X.Preview3D.execute("mesh/a_00001_.glb").ui == {"result": ["mesh/a_00001_.glb", None, None]}
        with pytest.raises(FileNotFoundError, match="not found in the output folder"):
            X.Preview3D.execute("mesh/missing.glb")
        with pytest.raises(ValueError, match="leaves its folder|must be"):
            X.Preview3D.execute("../outside.glb")
        with pytest.raises(ValueError, match="needs a model_file"):
            X.Preview3D.execute("")


def test_load3d_renders_views_headless_and_outputs_the_mesh(tmp_path: Path) -> None:
    executor, paths = _executor(tmp_path)
    with use_paths(paths):
        mesh = X.MeshFromPrimitive.execute("torus", 24, 0.7, "position").values[0]
        assert X.SaveMesh.execute(mesh, "model", "ply").ui == {
            "3d": [{"filename": "model_00001_.ply", "subfolder": "", "type": "output"}]}
    (paths.input_dir / "3d").mkdir(parents=True)
    shutil.copy(paths.output_dir / "model_00001_.ply", paths.input_dir / "3d" / "torus.ply")
    prompt = {"1": {"class_type": "Load3D", "inputs": {"model_file": "3d/torus.ply", "image": {}, "width": 64,
                                                       "height": 48}},
              "2": {"class_type": "SaveGLB", "inputs": {"mesh": ["1", 6], "filename_prefix": "again"}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "view"}}}
    result, _ = _run(tmp_path, prompt)
    assert result.status == "success", result.error
    with use_paths(paths):
        image, mask, mesh_path, normal, camera, recording, loaded = X.Load3D.execute("3d/torus.ply", {}, 64, 48).values
    assert image.shape == (1, 48, 64, 3) and mask.shape == (1, 48, 64) and normal.shape == (1, 48, 64, 3)
    assert mesh_path == "3d/torus.ply" and camera is None and recording is None
    assert loaded.num_faces == mesh.num_faces
    # the torus covers part of the frame, with its hole: neither empty nor full
    assert 0.2 < float(mask.mean()) < 0.8
    with use_paths(paths):
        assert X.Load3D.define_schema().input("model_file").resolved_choices() == ["3d/torus.ply"]


def test_bad_input_gives_clear_errors(tmp_path: Path) -> None:
    escape, _ = _run(tmp_path, _frames_graph({"filename_prefix": "../../escape", "format": "mp4", "codec": "auto"}))
    assert escape.status == "error" and "outside the output folder" in escape.error["exception_message"]
    assert not (tmp_path.parent / "escape_00001_.mp4").exists()
    clash, _ = _run(tmp_path, _frames_graph({"filename_prefix": "x", "format": "mp4", "codec": "vp9"}))
    assert clash.status == "error" and "codec vp9 is written as webm" in clash.error["exception_message"]
    missing, _ = _run(tmp_path, {"1": {"class_type": "LoadVideo", "inputs": {"file": "nope.mp4"}},
                                 "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "v",
                                                                             "format": "auto", "codec": "auto"}}})
    assert missing.status == "error" and "Invalid video file: nope.mp4" in json.dumps(missing.error)
    wrong_type, _ = _run(tmp_path, {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8,
                                                                                 "batch_size": 1, "color": 0}},
                                    "2": {"class_type": "SaveGLB", "inputs": {"mesh": ["1", 0], "filename_prefix": "m"}}})
    assert wrong_type.status == "error" and "mismatch" in json.dumps(wrong_type.error)
    with pytest.raises(ValueError, match="must be a MESH"):
        X.SaveGLB.execute(torch.zeros(3, 3), "m")
    with pytest.raises(ValueError, match="must be a VIDEO"):
        X.SaveVideo.execute(torch.zeros(2, 8, 8, 3), "v")
    with pytest.raises(ValueError, match="audio is not supported"):
        X.CreateVideo.execute(torch.zeros(2, 8, 8, 3), 8.0, audio={"waveform": torch.zeros(1, 1, 8)})


def test_load3d_takes_the_viewer_capture(tmp_path: Path) -> None:
    from PIL import Image

    executor, paths = _executor(tmp_path)
    (paths.input_dir / "3d").mkdir(parents=True)
    (paths.temp_dir / "threed").mkdir(parents=True)
    with use_paths(paths):
        X.SaveMesh.execute(X.MeshFromPrimitive.execute("sphere", 12, 0.5, "red").values[0], "3d/ball", "glb")
        shutil.move(paths.output_dir / "3d" / "ball_00001_.glb", paths.input_dir / "3d" / "ball.glb")
        Image.new("RGB", (20, 10), (255, 0, 0)).save(paths.temp_dir / "threed" / "view.png")
        Image.new("RGB", (20, 10), (0, 0, 255)).save(paths.temp_dir / "threed" / "normal.png")
        capture = {"image": "threed/view.png [temp]", "mask": "threed/view.png [temp]",
                   "normal": "threed/normal.png [temp]", "camera_info": {"zoom": 1}, "recording": ""}
        image, mask, path, normal, camera, recording, mesh = X.Load3D.execute("3d/ball.glb", capture, 64, 64).values
    assert image.shape == (1, 10, 20, 3) and float(image[..., 0].mean()) == 1.0
    assert float(normal[..., 2].mean()) == 1.0 and camera == {"zoom": 1} and recording is None
    assert mesh.num_faces > 0 and path == "3d/ball.glb"
    assert "capture record" in str(X.Load3D.validate_inputs("3d/ball.glb", "not a dict"))


def test_input_listings_skip_links_out_and_other_files(tmp_path: Path) -> None:
    paths = Paths(input_dir=tmp_path / "input")
    (paths.input_dir / "3d" / "sub").mkdir(parents=True)
    for name in ("a.mp4", "b.webm", "note.txt", "3d/m.glb", "3d/sub/n.obj"):
        (paths.input_dir / name).write_bytes(b"x")
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"x")
    (paths.input_dir / "link.mp4").symlink_to(outside)
    with use_paths(paths):
        assert X.LoadVideo.define_schema().input("file").resolved_choices() == ["a.mp4", "b.webm"]
        assert X.Load3D.define_schema().input("model_file").resolved_choices() == ["3d/m.glb", "3d/sub/n.obj"]
        assert "Invalid video file" in str(X.LoadVideo.validate_inputs("link.mp4"))
