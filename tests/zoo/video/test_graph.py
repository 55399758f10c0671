"""graphs/video_generate.json through the engine on a tiny random video DiT: text -> clip -> SaveVideo (mp4)."""

from __future__ import annotations

import pytest
from video_graphs import graph_executor, load_graph, progress_values, saved_video, use_tiny_video_weights

pytest.importorskip("diffusers")


@pytest.fixture()
def tiny_weights(tmp_path, monkeypatch):
    return use_tiny_video_weights(tmp_path, monkeypatch)


def test_video_generate_graph_saves_an_mp4_with_the_clip(tmp_path, tiny_weights):
    graph = load_graph("video_generate")
    graph["2"]["inputs"] |= {"steps": 2, "frames": 3}
    progress: list = []
    result = graph_executor(tmp_path).execute(graph, prompt_id="v", emit=lambda kind, data: progress.append((kind, data)))
    assert result.status == "success", result.error
    clip = saved_video(tmp_path, result, "3")
    assert clip.num_frames == 3 and clip.fps == 8 and clip.frames.shape == (3, 64, 64, 3)
    assert clip.metadata.get("description") == graph["2"]["inputs"]["prompt"]
    assert len(result.outputs["4"]["images"]) == 3                       # the IMAGE output: one per frame
    assert progress_values(progress, "2") == [1, 2]


def test_text_to_video_node_rejects_an_empty_prompt(tmp_path, tiny_weights):
    graph = load_graph("video_generate")
    graph["2"]["inputs"] |= {"steps": 1, "frames": 2, "prompt": " "}
    result = graph_executor(tmp_path).execute(graph, prompt_id="e")
    assert result.status == "error" and "prompt is empty" in str(result.error)
