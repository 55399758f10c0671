"""The video sampler nodes' shared plumbing: progress per step, interrupts before the report, the prompt check,
the clip as a VIDEO and the (VIDEO, IMAGE) output."""

from __future__ import annotations

import threading
from fractions import Fraction
from typing import Any

import pytest
import torch

from fewstep.app.api import ExecutionContext, InterruptedError_, reset_context, set_context
from fewstep.nodes.core.video_nodes import prompt_video, require_prompt, step_progress, video_sampler_output


def _job(reports: list[tuple[Any, ...]], flag: threading.Event) -> ExecutionContext:
    return ExecutionContext("p", "1", "FewstepTextToVideo", {}, {}, report=lambda *a: reports.append(a[:2]),
                            is_interrupted=flag.is_set)


def _fake_sampler(steps: int, frames: torch.Tensor) -> Any:
    """sample(callback) -> Video: calls back once per step like ``nodes.core.video_sampling``."""
    def sample(callback: Any) -> Any:
        for i in range(steps):
            callback({"i": i})
        return prompt_video(frames, 8, "a red circle", "fake, 3 steps")
    return sample


def test_the_output_is_the_clip_and_its_frames_with_one_report_per_step() -> None:
    frames = torch.rand(2, 4, 8, 8, 3)                                  # [B, T, H, W, 3]: the first clip is kept
    reports: list[tuple[Any, ...]] = []
    token = set_context(_job(reports, threading.Event()))
    try:
        out = video_sampler_output(3, _fake_sampler(3, frames))
    finally:
        reset_context(token)
    video, image = out.values
    assert reports == [(1, 3), (2, 3), (3, 3)]
    assert torch.equal(video.frames, frames[0]) and image is video.frames
    assert video.fps == Fraction(8)
    assert dict(video.metadata) == {"description": "a red circle", "comment": "fake, 3 steps"}


def test_an_interrupt_stops_the_sampler_before_the_step_is_reported() -> None:
    reports: list[tuple[Any, ...]] = []
    flag = threading.Event()
    callback = step_progress(5)
    token = set_context(_job(reports, flag))
    try:
        callback({"i": 0})
        flag.set()
        with pytest.raises(InterruptedError_):
            callback({"i": 1})
    finally:
        reset_context(token)
    assert reports == [(1, 5)]


def test_outside_a_job_progress_is_silent_and_an_empty_prompt_is_refused() -> None:
    step_progress(2)({"i": 0})                                          # no job context: a no-op
    require_prompt("a blue square", "sampler")
    with pytest.raises(ValueError, match="^My Sampler: the prompt is empty; describe the clip"):
        require_prompt(" \n", "My Sampler")
