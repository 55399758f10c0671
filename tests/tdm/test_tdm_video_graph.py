"""graphs/tdm_video.json through the engine on a tiny random video DiT: TDM Distill (video) -> the student's
sampler -> SaveVideo, checkpoints and the resumed re-run; the sampler's and the loader's errors."""

from __future__ import annotations

import pytest
import torch
from video_graphs import graph_executor, load_graph, progress_values, saved_video, use_tiny_video_weights

pytest.importorskip("diffusers")


@pytest.fixture()
def tiny_weights(tmp_path, monkeypatch):
    return use_tiny_video_weights(tmp_path, monkeypatch)


def _graph(**distill) -> dict:
    graph = load_graph("tdm_video")
    graph["2"]["inputs"] |= {"steps": 3, "batch_size": 2, "frames": 2, "checkpoint_every": 2, "preview_every": 0,
                             "prompt_source": "list"} | distill
    graph["3"]["inputs"] |= {"frames": 2}
    return graph


def test_tdm_video_graph_distils_samples_and_resumes(tmp_path, tiny_weights):
    progress: list = []
    result = graph_executor(tmp_path).execute(_graph(), prompt_id="t",
                                              emit=lambda kind, data: progress.append((kind, data)))
    assert result.status == "success", result.error
    clip = saved_video(tmp_path, result, "4")
    assert clip.num_frames == 2 and clip.frames.shape == (2, 64, 64, 3)
    assert "TDM student, 4 Euler steps" in clip.metadata.get("comment", "")
    losses = result.outputs["2"]["loss"]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert progress_values(progress, "3") == [1, 2, 3, 4]                    # the student's own K = 4 steps
    runs = list((tmp_path / "models" / "checkpoints" / "distill").glob("tdm_video-*"))
    assert len(runs) == 1 and sorted(p.name for p in runs[0].glob("step_*"))   # checkpoints were written

    again = graph_executor(tmp_path).execute(_graph(), prompt_id="t2")         # same settings: resumes at step 3
    assert again.status == "success", again.error
    assert again.outputs["2"]["loss"] == pytest.approx(losses)
    clip2 = saved_video(tmp_path, again, "4")
    assert torch.equal(torch.as_tensor(clip2.frames), torch.as_tensor(clip.frames))


def test_two_step_student_samples_in_two_steps(tmp_path, tiny_weights):
    progress: list = []
    result = graph_executor(tmp_path).execute(_graph(student_steps=2, steps=1), prompt_id="k2",
                                              emit=lambda kind, data: progress.append((kind, data)))
    assert result.status == "success", result.error
    assert progress_values(progress, "3") == [1, 2]


def test_student_sampler_refuses_a_teacher(tmp_path, tiny_weights):
    graph = _graph()
    graph["3"]["inputs"]["video_model"] = ["1", 0]                           # the teacher, not a student
    result = graph_executor(tmp_path).execute(graph, prompt_id="e")
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
