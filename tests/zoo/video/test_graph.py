"""graphs/video_generate.json through the engine on a tiny random video DiT: text -> clip -> SaveVideo (mp4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fewstep.app.api import Paths

pytest.importorskip("diffusers")
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture()
def tiny_weights(tmp_path, monkeypatch):
    """A random 'test'-preset DiT saved as fewstep-tiny-video.safetensors in a folder the loader reads."""
    from fewstep.nodes.zoo.video import model as video_model
    from fewstep.nodes.zoo.video import train
    from fewstep.nodes.zoo.video.dit import PRESETS, VideoDiT

    torch.manual_seed(0)
    dit = VideoDiT(PRESETS["test"])
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path / "weights"
    train.save_outputs(folder, train.VideoTrainConfig(dit_preset="test"), {}, dit, None)
    monkeypatch.setattr(video_model, "weights_dir", lambda: folder)
    return folder


def _executor(tmp_path: Path):
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in", user_dir=tmp_path / "user")
    return Executor(load_registry(), CacheSet(), paths)


def test_video_generate_graph_saves_an_mp4_with_the_clip(tmp_path, tiny_weights):
    from fewstep.nodes.core.video_io import load_video

    graph = json.loads((ROOT / "graphs" / "video_generate.json").read_text())
    graph["2"]["inputs"] |= {"steps": 2, "frames": 3}
    progress: list = []
    result = _executor(tmp_path).execute(graph, prompt_id="v", emit=lambda kind, data: progress.append((kind, data)))
    assert result.status == "success", result.error
    saved = result.outputs["3"]["images"][0]
    clip = load_video(tmp_path / "out" / saved["subfolder"] / saved["filename"])
    assert clip.num_frames == 3 and clip.fps == 8 and clip.frames.shape == (3, 64, 64, 3)
    assert clip.metadata.get("description") == graph["2"]["inputs"]["prompt"]
    assert len(result.outputs["4"]["images"]) == 3                       # the IMAGE output: one per frame
    steps = [d["value"] for kind, d in progress if kind == "progress" and d["node"] == "2"]
    assert steps == [1, 2]


def test_text_to_video_node_rejects_an_empty_prompt(tmp_path, tiny_weights):
    graph = json.loads((ROOT / "graphs" / "video_generate.json").read_text())
    graph["2"]["inputs"] |= {"steps": 1, "frames": 2, "prompt": " "}
    result = _executor(tmp_path).execute(graph, prompt_id="e")
    assert result.status == "error" and "prompt is empty" in str(result.error)
