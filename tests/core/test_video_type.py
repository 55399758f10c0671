"""The VIDEO value (fewstep.nodes.core.video.Video): validation with actionable errors, derived sizes,
exact frame rates and ComfyUI's VideoInput accessors."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from fewstep.nodes.core.video import Video, as_fps


def _frames(t: int = 5, h: int = 6, w: int = 8) -> torch.Tensor:
    return torch.rand(t, h, w, 3, generator=torch.Generator().manual_seed(0))


def test_sizes_duration_and_comfyui_accessors() -> None:
    video = Video(_frames(), Fraction(24), {"prompt": "{}"})
    assert (video.num_frames, video.height, video.width) == (5, 6, 8)
    assert video.duration_s == pytest.approx(5 / 24)
    parts = video.get_components()
    assert parts.images is video.frames and parts.frame_rate == 24 and parts.audio is None
    assert video.get_dimensions() == (8, 6)          # ComfyUI's order: (width, height)
    assert video.get_duration() == pytest.approx(5 / 24) and video.get_frame_count() == 5


def test_fps_is_exact_and_floats_find_the_ntsc_fraction() -> None:
    assert Video(_frames(), 30).fps == Fraction(30)
    assert as_fps(30000 / 1001) == Fraction(30000, 1001) and as_fps(29.97) == Fraction(2997, 100)
    assert as_fps("24000/1001") == Fraction(24000, 1001)
    with pytest.raises(ValueError, match="positive"):
        as_fps(0)
    with pytest.raises(ValueError, match="positive number"):
        as_fps(True)


def test_metadata_is_read_only_and_copied() -> None:
    source = {"prompt": "{}"}
    video = Video(_frames(), 8, source)
    source["prompt"] = "changed"
    assert video.metadata["prompt"] == "{}"
    with pytest.raises(TypeError):
        video.metadata["x"] = "y"  # type: ignore[index]
    assert dict(video.with_metadata({"workflow": "w"}).metadata) == {"prompt": "{}", "workflow": "w"}


@pytest.mark.parametrize(("frames", "message"), [
    (torch.rand(5, 6, 8), r"shape \[T, H, W, 3\]"),
    (torch.rand(5, 6, 8, 4), r"shape \[T, H, W, 3\]"),
    (torch.rand(0, 6, 8, 3), "at least one frame"),
    (torch.rand(2, 6, 8, 3, dtype=torch.float64), "float32"),
    (torch.rand(2, 6, 8, 3) * 2, r"lie in \[0, 1\]"),
    (torch.full((2, 6, 8, 3), float("nan")), r"lie in \[0, 1\]"),
    ([[0.0]], "torch tensor"),
])
def test_bad_frames_are_refused_with_the_reason(frames: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Video(frames, 24)  # type: ignore[arg-type]


def test_bad_metadata_is_refused() -> None:
    with pytest.raises(ValueError, match="str to str"):
        Video(_frames(), 24, {"prompt": {"1": {}}})  # type: ignore[dict-item]


def test_pickles_for_worker_processes() -> None:
    import pickle

    video = Video(_frames(), Fraction(30000, 1001), {"prompt": "{}"})
    back = pickle.loads(pickle.dumps(video))
    assert torch.equal(back.frames, video.frames) and back.fps == video.fps and dict(back.metadata) == {"prompt": "{}"}
