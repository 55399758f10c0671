"""What the video nodes do: IMAGE batches to VIDEO, and saving a VIDEO under output/ with the editor's
``ui`` entry for it."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch

from fewstep.app.api import release_output
from fewstep.nodes.core.video import Video, as_fps
from fewstep.nodes.core.video_io import EXTENSIONS, frame_name, save_video
from fewstep.nodes.export.files import OutputSlot, merged_metadata, output_slot


def require_video(value: object, name: str) -> Video:
    if not isinstance(value, Video):
        raise ValueError(f"{name} must be a VIDEO (fewstep.nodes.core.video.Video), got {type(value).__name__}")
    return value


def video_from_images(images: Any, fps: float | Fraction, audio: Any = None) -> Video:
    """An IMAGE batch [T, H, W, C] as a clip: moved to the CPU as float32, clamped to [0, 1] (as savers clamp),
    RGBA loses its alpha. Raises ValueError for audio (not supported) or a batch that is not IMAGE-shaped."""
    if audio is not None:
        raise ValueError("audio is not supported: leave CreateVideo's audio input unconnected")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be an IMAGE batch [T, H, W, 3], got {shape}")
    frames = images[..., :3].detach().to("cpu", torch.float32).clamp(0, 1).contiguous()
    return Video(frames, as_fps(fps))


@dataclass(frozen=True)
class SaveOptions:
    """SaveVideo's settings. ``format`` auto is mp4 (H.264), or webm when ``codec`` is vp9."""

    format: str = "auto"
    codec: str = "auto"
    crf: float | None = None
    quality: int = 90
    lossless: bool = False
    method: int = 4
    compress_level: int = 4

    def container(self) -> str:
        """The file format after resolving auto; ValueError when codec and format do not go together."""
        wanted = {"h264": "mp4", "vp9": "webm"}.get(self.codec)
        if self.codec not in ("auto", "h264", "vp9"):
            raise ValueError(f"codec must be auto, h264 or vp9, got {self.codec!r}")
        if self.format == "auto":
            return wanted or "mp4"
        if self.format not in EXTENSIONS:
            raise ValueError(f"format must be auto or one of {', '.join(EXTENSIONS)}, got {self.format!r}")
        if wanted is not None and wanted != self.format:
            raise ValueError(f"codec {self.codec} is written as {wanted}, not {self.format}: set format to "
                             f"{wanted} or auto, or codec to auto")
        return self.format


def save_video_output(video: object, filename_prefix: str, options: SaveOptions, prompt: Any,
                      extra_pnginfo: Any) -> dict[str, list[Any]]:
    """Save under output/ as ``<prefix>_<counter:05>_.<ext>`` (a folder of that name for frames) with the
    graph in the file, and return the editor's ``ui`` entry:

    - mp4 / webm / webp / png: ``{"images": [ref], "animated": [True]}`` (ComfyUI's PreviewVideo; the editor
      plays .mp4/.webm in a <video> and shows .webp/.png as an animated image);
    - gif: ``{"video": [ref]}`` (the editor would put a GIF in a <video>, which cannot play it; our
      frontend/video.js shows it in an <img>);
    - frames: ``{"images": [ref per frame]}``.
    """
    clip = require_video(video, "video")
    fmt = options.container()
    clip = clip.with_metadata(merged_metadata({}, prompt, extra_pnginfo))
    slot = output_slot(filename_prefix, EXTENSIONS[fmt], clip.width, clip.height, prompt)
    name = slot.filename(EXTENSIONS[fmt])
    try:
        save_video(clip, slot.folder / name, fmt, crf=options.crf, quality=options.quality,  # type: ignore[arg-type]
                   lossless=options.lossless, method=options.method, compress_level=options.compress_level)
    finally:
        release_output(slot.folder / name)
    if fmt == "frames":
        return {"images": _frame_items(slot, name, clip.num_frames)}
    if fmt == "gif":
        return {"video": [slot.item(name)]}
    return {"images": [slot.item(name)], "animated": [True]}


def _frame_items(slot: OutputSlot, folder_name: str, count: int) -> list[dict[str, str]]:
    subfolder = f"{slot.subfolder}/{folder_name}" if slot.subfolder else folder_name
    return [slot.item(frame_name(index), subfolder) for index in range(count)]
