"""graphs/tdm_video.json through the engine on a tiny random video DiT: TDM Distill (video) -> the student's
sampler -> SaveVideo, checkpoints and the resumed re-run; the sampler's and the loader's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fewstep.app.api import Paths

pytest.importorskip("diffusers")
ROOT = Path(__file__).resolve().parents[2]


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


def _graph(**distill) -> dict:
    graph = json.loads((ROOT / "graphs" / "tdm_video.json").read_text())
    graph["2"]["inputs"] |= {"steps": 3, "batch_size": 2, "frames": 2, "checkpoint_every": 2, "preview_every": 0,
                             "prompt_source": "list"} | distill
    graph["3"]["inputs"] |= {"frames": 2}
    return graph


def test_tdm_video_graph_distils_samples_and_resumes(tmp_path, tiny_weights):
    from fewstep.nodes.core.video_io import load_video

    progress: list = []
    result = _executor(tmp_path).execute(_graph(), prompt_id="t", emit=lambda kind, data: progress.append((kind, data)))
    assert result.status == "success", result.error
    saved = result.outputs["4"]["images"][0]
    clip = load_video(tmp_path / "out" / saved["subfolder"] / saved["filename"])
    assert clip.num_frames == 2 and clip.frames.shape == (2, 64, 64, 3)
    assert "TDM student, 4 Euler steps" in clip.metadata.get("comment", "")
    losses = result.outputs["2"]["loss"]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    sampler_steps = [d["value"] for kind, d in progress if kind == "progress" and d["node"] == "3"]
    assert sampler_steps == [1, 2, 3, 4]                                      # the student's own K = 4 steps
    runs = list((tmp_path / "models" / "checkpoints" / "distill").glob("tdm_video-*"))
    assert len(runs) == 1 and sorted(p.name for p in runs[0].glob("step_*"))   # checkpoints were written

    again = _executor(tmp_path).execute(_graph(), prompt_id="t2")              # same settings: resumes at step 3
    assert again.status == "success", again.error
    assert again.outputs["2"]["loss"] == pytest.approx(losses)
    saved2 = again.outputs["4"]["images"][0]
    clip2 = load_video(tmp_path / "out" / saved2["subfolder"] / saved2["filename"])
    assert torch.equal(torch.as_tensor(clip2.frames), torch.as_tensor(clip.frames))


def test_two_step_student_samples_in_two_steps(tmp_path, tiny_weights):
    progress: list = []
    result = _executor(tmp_path).execute(_graph(student_steps=2, steps=1), prompt_id="k2",
                                         emit=lambda kind, data: progress.append((kind, data)))
    assert result.status == "success", result.error
    assert [d["value"] for kind, d in progress if kind == "progress" and d["node"] == "3"] == [1, 2]


def test_student_sampler_refuses_a_teacher(tmp_path, tiny_weights):
    graph = _graph()
    graph["3"]["inputs"]["video_model"] = ["1", 0]                           # the teacher, not a student
    result = _executor(tmp_path).execute(graph, prompt_id="e")
    assert result.status == "error" and "not a TDM video student" in str(result.error)


def test_shipped_student_refuses_a_teacher_of_another_architecture(tiny_weights):
    from fewstep.nodes.tdm.video_graph import load_shipped_video_student, shipped_video_students
    from fewstep.nodes.zoo.video.model import load_video_model

    names = shipped_video_students()
    if not names:
        pytest.skip("no shipped video student")
    teacher = load_video_model(with_text=False)                              # the tiny 'test' DiT
    with pytest.raises(ValueError, match="distilled from a DiT of config"):
        load_shipped_video_student(names[0], teacher)


def test_shipped_students_sample_in_their_own_steps():
    """The shipped K = 4 and K = 2 students load around the built-in video model and sample deterministically
    in exactly K model calls."""
    from fewstep.nodes.tdm.video_graph import (
        load_shipped_video_student,
        sample_student,
        shipped_video_students,
    )
    from fewstep.nodes.zoo.video.model import load_video_model

    assert shipped_video_students() == ["fewstep-tdm-video-k2.safetensors", "fewstep-tdm-video-k4.safetensors"]
    teacher = load_video_model()
    for name, k in (("fewstep-tdm-video-k4.safetensors", 4), ("fewstep-tdm-video-k2.safetensors", 2)):
        student = load_shipped_video_student(name, teacher)
        assert student.info["tdm"]["student_steps"] == k and student.vae is teacher.vae
        calls: list = []
        a = sample_student(student, "a small red circle moving right", frames=2, seed=3, callback=calls.append)
        b = sample_student(student, "a small red circle moving right", frames=2, seed=3)
        assert len(calls) == k and [round(float(c["sigma"]), 4) for c in calls][0] == 1.0
        assert torch.equal(a.frames, b.frames) and a.frames.shape == (2, 64, 64, 3)
        assert not torch.equal(student.dit.patch_out.weight, teacher.dit.patch_out.weight)   # trained weights
