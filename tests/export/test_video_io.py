"""Video files (fewstep.nodes.core.video_io): every format writes and reads back the frame count, size,
exact frame rate and metadata; pixel errors stay within each codec's bound."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewstep.nodes.core.video import Video
from fewstep.nodes.core.video_io import VIDEO_FORMATS, load_video, save_video

pytest.importorskip("av")
META = {"prompt": json.dumps({"1": {"class_type": "CreateVideo", "inputs": {"fps": 24}}}),
        "workflow": json.dumps({"nodes": [], "note": "é\nline"}), "MixedCase": "kept"}


def smooth_clip(frames: int = 9, height: int = 32, width: int = 48) -> torch.Tensor:
    """A horizontal colour ramp with a bright disc moving right: smooth, so a lossy codec's error is small."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    clip = torch.empty(frames, height, width, 3)
    for t in range(frames):
        disc = (((x - 0.2 - 0.6 * t / frames) * width / height) ** 2 + (y - 0.5) ** 2 < 0.04).float()
        clip[t] = torch.stack([x, 1 - x, 0.3 + 0.4 * y], dim=-1) * (1 - disc[..., None]) + disc[..., None] * 0.95
    return clip.clamp(0, 1)


def _save(video: Video, tmp_path: Path, fmt: str, **options: object) -> Path:
    return save_video(video, tmp_path / ("clip" if fmt == "frames" else f"clip.{fmt}"), fmt, **options)  # type: ignore[arg-type]


# Error bounds (mean |Δ| over pixels, 0..1 scale). Lossless containers only lose the uint8 truncation
# (< 1/255). On this small clip H.264 at crf 19 measured 0.014-0.015 and VP9 at crf 31 0.015-0.016
# (4:2:0 chroma halves the colour resolution of a 32x48 clip with a sharp-edged disc); a channel swap or
# a limited/full range mix-up costs > 0.05, so 0.025 separates them. GIF's 256-colour adaptive palette measured 0.002 here,
# lossy WebP at quality 90 0.003.
BOUNDS = {"mp4": 0.025, "webm": 0.025, "gif": 0.01, "webp": 0.01, "png": 1 / 255, "frames": 1 / 255}


@pytest.mark.parametrize("fmt", VIDEO_FORMATS)
def test_round_trip_frames_fps_metadata(tmp_path: Path, fmt: str) -> None:
    video = Video(smooth_clip(), Fraction(24), META)
    back = load_video(_save(video, tmp_path, fmt))
    assert (back.num_frames, back.height, back.width) == (9, 32, 48)
    assert back.fps == Fraction(24) and isinstance(back.fps, Fraction)
    assert dict(back.metadata) == META
    assert float((back.frames - video.frames).abs().mean()) < BOUNDS[fmt]


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_odd_sizes_and_ntsc_rates_survive_the_420_codecs(tmp_path: Path, fmt: str) -> None:
    video = Video(smooth_clip(5, 33, 47), Fraction(30000, 1001))
    back = load_video(_save(video, tmp_path, fmt))
    assert (back.num_frames, back.height, back.width) == (5, 33, 47) and back.fps == Fraction(30000, 1001)
    assert float((back.frames - video.frames).abs().mean()) < BOUNDS[fmt]


@pytest.mark.parametrize("fmt", ["gif", "webp", "png"])
def test_repeated_frames_keep_the_frame_count(tmp_path: Path, fmt: str) -> None:
    # Pillow folds identical neighbours into one longer frame; reading unfolds them by duration.
    clip = smooth_clip(6)
    clip[2] = clip[1]
    clip[3] = clip[1]
    back = load_video(_save(Video(clip, Fraction(12)), tmp_path, fmt))
    assert back.num_frames == 6
    assert float((back.frames[3] - clip[3]).abs().mean()) < BOUNDS[fmt]


def test_gif_palette_error_on_noise_is_bounded(tmp_path: Path) -> None:
    noise = torch.rand(3, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    back = load_video(_save(Video(noise, 10), tmp_path, "gif"))
    # 768 random colours in a 256-entry palette: median-cut quantization measured 0.03; > 0.06 means the
    # encoder fell back to the fixed web palette.
    assert float((back.frames - noise).abs().mean()) < 0.06


def test_crf_trades_size_for_quality(tmp_path: Path) -> None:
    video = Video(smooth_clip(9, 64, 64), 24)
    fine = _save(video, tmp_path / "a", "mp4", crf=10)
    coarse = _save(video, tmp_path / "b", "mp4", crf=45)
    assert coarse.stat().st_size < fine.stat().st_size
    error = {p: float((load_video(p).frames - video.frames).abs().mean()) for p in (fine, coarse)}
    assert error[fine] < error[coarse]
    with pytest.raises(ValueError, match=r"crf for mp4 must be in \[0, 51\]"):
        _save(video, tmp_path, "mp4", crf=60)


def test_webp_keeps_comfyui_exif_layout(tmp_path: Path) -> None:
    path = _save(Video(smooth_clip(3), 8, META), tmp_path, "webp")
    with Image.open(path) as image:
        exif = image.getexif()
        assert exif[0x0110] == "prompt:" + META["prompt"]      # where ComfyUI's editor looks for the prompt
        assert exif[0x010F] == "workflow:" + META["workflow"]
        assert getattr(image, "n_frames", 1) == 3


def test_frame_folder_layout_and_plain_folders(tmp_path: Path) -> None:
    folder = _save(Video(smooth_clip(4), 6, META), tmp_path, "frames")
    assert sorted(p.name for p in folder.iterdir()) == [f"frame_0000{i}.png" for i in range(4)] + ["video.json"]
    with Image.open(folder / "frame_00000.png") as first:
        assert first.text["prompt"] == META["prompt"]          # dropping a frame on the editor loads the graph
    (folder / "video.json").unlink()
    with pytest.raises(ValueError, match="give fps"):
        load_video(folder)
    assert load_video(folder, fps=12).fps == 12


def test_foreign_mp4_reads_rate_and_tags(tmp_path: Path) -> None:
    import av

    path = tmp_path / "foreign.mp4"
    with av.open(str(path), "w", format="mp4", options={"movflags": "use_metadata_tags"}) as container:
        container.metadata["prompt"] = "{}"
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for _ in range(4):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    back = load_video(path)
    assert back.num_frames == 4 and back.fps == 25 and dict(back.metadata) == {"prompt": "{}"}


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        load_video(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="not a readable video file"):
        load_video(tmp_path / "text.mp4")
    with pytest.raises(ValueError, match="unknown video format 'avi'"):
        save_video(Video(smooth_clip(2), 8), tmp_path / "x.avi", "avi")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="letter case"):
        save_video(Video(smooth_clip(2), 8, {"a": "1", "A": "2"}), tmp_path / "x.webm", "webm")


@pytest.mark.parametrize("fmt", ["gif", "webp", "png"])
def test_a_still_clip_keeps_its_frame_count(tmp_path: Path, fmt: str) -> None:
    # libwebp writes six identical frames as one still image without durations; the recorded count restores them
    back = load_video(_save(Video(torch.full((6, 8, 8, 3), 0.5), 12), tmp_path, fmt))
    assert back.num_frames == 6 and back.fps == 12
