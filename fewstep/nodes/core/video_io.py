"""Video files: write a :class:`~fewstep.nodes.core.video.Video` as MP4 (H.264), WebM (VP9), animated GIF,
animated WebP, animated PNG or a folder of PNG frames, and read any of them back.

Metadata (text key -> text value; the graph as ComfyUI writes it: ``prompt`` and ``workflow`` as JSON)
goes where each format allows:

==========  ==========================================================================================
mp4, webm   container tags, one per key (MP4 with ``movflags=use_metadata_tags``, as ComfyUI's SaveVideo)
gif         the comment extension, one JSON object
webp        EXIF, ``key:value`` strings with ``prompt`` in tag 0x0110 and the others from 0x010F down
            (ComfyUI's SaveAnimatedWEBP layout, which its editor reads back)
png         text chunks, one per key (SaveImage / SaveAnimatedPNG)
frames      text chunks of the first frame, and ``video.json`` beside the frames
==========  ==========================================================================================

Each file also records the exact frame rate (key ``fewstep``), so reading gives back the same
``Fraction`` even where the format stores rounded frame durations (GIF: 10 ms steps; WebP/APNG: 1 ms).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageSequence
from PIL.PngImagePlugin import PngInfo

from fewstep.nodes.core.video import Video, as_fps

VideoFormat = Literal["mp4", "webm", "gif", "webp", "png", "frames"]
VIDEO_FORMATS: tuple[str, ...] = ("mp4", "webm", "gif", "webp", "png", "frames")
EXTENSIONS: dict[str, str] = {"mp4": ".mp4", "webm": ".webm", "gif": ".gif", "webp": ".webp", "png": ".png",
                              "frames": ""}
FEWSTEP_KEY = "fewstep"          # JSON {"fps": "num/den", "keys": [metadata keys as given]}
FRAMES_SIDECAR = "video.json"    # in a frame folder: {"fps", "num_frames", "metadata"}
# Default constant-rate factors: visually lossless for H.264 (x264's 0-51 scale, 23 is its default) and a
# good web setting for VP9 (0-63); lower is better quality and bigger files.
DEFAULT_CRF = {"mp4": 19.0, "webm": 31.0}
_CONTAINER_KEYS = {"major_brand", "minor_version", "compatible_brands", "encoder", "creation_time", "duration"}


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[T, H, W, 3] floats in [0, 1] -> uint8 by truncation, as ComfyUI's savers (0.25 -> 63)."""
    return np.clip(255.0 * frames.detach().float().cpu().numpy(), 0, 255).astype(np.uint8)


def from_uint8(frames: list[np.ndarray]) -> torch.Tensor:
    """A list of uint8 [H, W, 3] arrays -> float32 [T, H, W, 3] in [0, 1]."""
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 255.0)


def save_video(video: Video, path: Path | str, format: VideoFormat, *, crf: float | None = None,
               quality: int = 90, lossless: bool = False, method: int = 4, compress_level: int = 4) -> Path:
    """Write ``video`` to ``path`` (a file, or a folder for ``frames``) with ``video.metadata`` inside.

    Args:
        format: one of :data:`VIDEO_FORMATS`.
        crf: constant-rate factor for mp4 (0-51) and webm (0-63); None takes :data:`DEFAULT_CRF`.
        quality: WebP quality 0-100 (ignored when ``lossless``).
        lossless: lossless WebP.
        method: WebP effort 0 (fastest) - 6 (slowest, smallest).
        compress_level: zlib level 0-9 of PNG / APNG / frame folders.

    Returns the path written. Raises ValueError for an unknown format or an out-of-range setting.
    """
    path = Path(path)
    if format not in VIDEO_FORMATS:
        raise ValueError(f"unknown video format {format!r}; choose one of {', '.join(VIDEO_FORMATS)}")
    if not 0 <= method <= 6 or not 0 <= compress_level <= 9:
        raise ValueError(f"WebP method must be in [0, 6] and PNG compress_level in [0, 9], got {method}, "
                         f"{compress_level}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if format in ("mp4", "webm"):
        _save_av(video, path, format, DEFAULT_CRF[format] if crf is None else float(crf))
    elif format == "gif":
        _save_gif(video, path)
    elif format == "webp":
        _save_webp(video, path, quality, lossless, method)
    elif format == "png":
        _save_apng(video, path, compress_level)
    else:
        _save_frames(video, path, compress_level)
    return path


def load_video(path: Path | str, fps: Fraction | float | None = None) -> Video:
    """Read a file written by :func:`save_video` (or any MP4/WebM/MKV/MOV/GIF/WebP/APNG, or a folder of
    PNG frames) back into a :class:`Video` with its frame rate and metadata.

    ``fps`` is used only where the file records none (a plain frame folder); elsewhere it is ignored.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file holds no video frames, or a frame folder has no PNGs and no ``fps``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video file {path.name!r} not found")
    if path.is_dir():
        return _load_frames(path, fps)
    suffix = path.suffix.lower()
    if suffix in (".gif", ".webp", ".png", ".apng"):
        return _load_pillow(path)
    return _load_av(path)


# ---------------------------------------------------------------------------------------- containers


def _fewstep_tag(video: Video) -> str:
    return json.dumps({"fps": f"{video.fps.numerator}/{video.fps.denominator}", "frames": video.num_frames,
                       "keys": list(video.metadata)})


def _check_metadata_keys(metadata: Mapping[str, str]) -> None:
    lowered = [key.lower() for key in metadata]
    if len(set(lowered)) != len(lowered) or FEWSTEP_KEY in lowered:
        raise ValueError(f"video metadata keys must differ in more than letter case and must not be "
                         f"{FEWSTEP_KEY!r} (WebM stores tag names upper-cased); got {list(metadata)}")


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad [T, H, W, 3] by repeating the last row / column to even H and W: 4:2:0 chroma (what browsers
    play) halves both sides, and libx264 refuses odd sizes. The true size is restored on reading."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else frames


def _save_av(video: Video, path: Path, format: str, crf: float) -> None:
    import av

    limit = 51 if format == "mp4" else 63
    if not 0 <= crf <= limit:
        raise ValueError(f"crf for {format} must be in [0, {limit}], got {crf}")
    _check_metadata_keys(video.metadata)
    frames = _even(to_uint8(video.frames))
    codec, options = ("libx264", {"crf": f"{crf:g}"}) if format == "mp4" else (
        # b:v 0 makes libvpx honour crf alone (constant quality). cpu-used 4 of 'good': 16 frames of 256x256
        # in 0.23 s on one busy core, mean error 0.0070 (realtime/cpu-used 8: 0.06 s, 0.0074).
        "libvpx-vp9", {"crf": f"{crf:g}", "b:v": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"})
    muxer_options = {"movflags": "use_metadata_tags"} if format == "mp4" else {}
    with av.open(str(path), mode="w", format=format, options=muxer_options) as container:
        container.metadata.update({**video.metadata, FEWSTEP_KEY: _fewstep_tag(video)})
        if (video.height, video.width) != frames.shape[1:3]:
            container.metadata["fewstep_size"] = f"{video.width}x{video.height}"
        stream = container.add_stream(codec, rate=video.fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = options
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())


def _load_av(path: Path) -> Video:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise ValueError(f"{path.name!r} is not a readable video file ({error})") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"{path.name!r} holds no video stream")
        stream = container.streams.video[0]
        tags = dict(container.metadata)
        arrays = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not arrays:
        raise ValueError(f"{path.name!r} holds no video frames")
    frames = np.stack(arrays)
    size = _tag(tags, "fewstep_size")
    if size:  # undo _even's padding
        width, height = (int(v) for v in size.split("x"))
        frames = frames[:, :height, :width]
    fps, metadata = _read_fewstep_tags(tags, rate)
    return Video(from_uint8(list(frames)), fps, metadata)


def _tag(tags: Mapping[str, str], key: str) -> str | None:
    """A container tag by case-insensitive name (Matroska upper-cases them)."""
    return next((value for name, value in tags.items() if name.lower() == key.lower()), None)


def _read_fewstep_tags(tags: Mapping[str, str], fallback_rate: Fraction | None) -> tuple[Fraction, dict[str, str]]:
    """(fps, metadata) from container tags: with our ``fewstep`` tag, the exact rate and the keys as written;
    without it, the stream's rate and every tag that is not the container's own."""
    record = _tag(tags, FEWSTEP_KEY)
    if record is not None:
        info = json.loads(record)
        metadata = {key: value for key in info["keys"] if (value := _tag(tags, key)) is not None}
        return as_fps(Fraction(info["fps"])), metadata
    if not fallback_rate:
        raise ValueError("the video stream records no frame rate")
    metadata = {key: value for key, value in tags.items()
                if key.lower() not in _CONTAINER_KEYS and key.lower() != "fewstep_size"}
    return as_fps(Fraction(fallback_rate)), metadata


# ----------------------------------------------------------------------------------- Pillow formats


def _pil_frames(video: Video) -> list[Image.Image]:
    return [Image.fromarray(array) for array in to_uint8(video.frames)]


def _durations_ms(video: Video) -> list[int]:
    """Per-frame display times in whole ms whose running sum tracks k · 1000 / fps, so the clip's total
    length is exact to 1 ms (24 fps -> 42, 41, 42, ...)."""
    ends = [round(k * 1000 / video.fps) for k in range(video.num_frames + 1)]
    return [max(1, b - a) for a, b in zip(ends, ends[1:], strict=False)]


def _save_gif(video: Video, path: Path) -> None:
    _check_metadata_keys(video.metadata)
    comment = json.dumps({FEWSTEP_KEY: {"fps": f"{video.fps.numerator}/{video.fps.denominator}",
                                        "frames": video.num_frames}, "metadata": dict(video.metadata)})
    first, *rest = _pil_frames(video)
    # GIF stores delays in 10 ms units; Pillow rounds them. Browsers play delays under 20 ms at 100 ms, so
    # GIFs above 50 fps play slowly in browsers (the exact rate is still read back from the comment).
    first.save(path, format="GIF", save_all=True, append_images=rest, duration=_durations_ms(video), loop=0,
               comment=comment.encode("utf-8"), optimize=False, disposal=1)


def _save_webp(video: Video, path: Path, quality: int, lossless: bool, method: int) -> None:
    if not 0 <= quality <= 100:
        raise ValueError(f"WebP quality must be in [0, 100], got {quality}")
    _check_metadata_keys(video.metadata)
    first, *rest = _pil_frames(video)
    exif = first.getexif()
    entries = {**video.metadata, FEWSTEP_KEY: _fewstep_tag(video)}
    tag = 0x010F
    for key, value in entries.items():  # ComfyUI's layout: prompt in 0x0110, the rest downward from 0x010F
        if key == "prompt":
            exif[0x0110] = f"prompt:{value}"
            continue
        if tag < 0x0100:
            raise ValueError(f"WebP metadata holds at most 16 entries besides 'prompt'; got {len(entries)}")
        exif[tag] = f"{key}:{value}"
        tag -= 1
    first.save(path, format="WEBP", save_all=True, append_images=rest, duration=_durations_ms(video), loop=0,
               lossless=lossless, quality=quality, method=method, exif=exif)


def _save_apng(video: Video, path: Path, compress_level: int) -> None:
    _check_metadata_keys(video.metadata)
    info = PngInfo()
    for key, value in {**video.metadata, FEWSTEP_KEY: _fewstep_tag(video)}.items():
        info.add_text(key, value)
    first, *rest = _pil_frames(video)
    first.save(path, format="PNG", save_all=True, append_images=rest, duration=_durations_ms(video), loop=0,
               pnginfo=info, compress_level=compress_level, default_image=False)


def _pillow_metadata(image: Image.Image) -> dict[str, str]:
    """Text entries of a GIF comment, WebP EXIF ``key:value`` strings or PNG text chunks."""
    if image.format == "GIF":
        comment = image.info.get("comment", b"")
        try:
            record = json.loads(comment.decode("utf-8")) if comment else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = {}
        return {**record.get("metadata", {}), **({FEWSTEP_KEY: json.dumps(record[FEWSTEP_KEY])}
                                                 if FEWSTEP_KEY in record else {})}
    if image.format == "WEBP":
        entries = {}
        for tag in range(0x0100, 0x0111):
            value = image.getexif().get(tag)
            if isinstance(value, str) and ":" in value:
                key, _, text = value.partition(":")
                entries[key] = text
        return entries
    return {key: str(value) for key, value in getattr(image, "text", {}).items()}


def _load_pillow(path: Path) -> Video:
    from fewstep.app.api import open_image

    with open_image(path) as image:
        tags = _pillow_metadata(image)
        arrays, durations = [], []
        for frame in ImageSequence.Iterator(image):
            arrays.append(np.asarray(frame.convert("RGB"), dtype=np.uint8))
            durations.append(float(frame.info.get("duration", 0) or 0))
    record = json.loads(tags.pop(FEWSTEP_KEY, "null") or "null")
    total_ms = sum(durations)
    if record is not None:
        fps = as_fps(Fraction(record["fps"]))
        keys = record.get("keys", list(tags))
        metadata = {key: tags[key] for key in keys if key in tags}
    elif total_ms > 0:
        fps, metadata = as_fps(Fraction(len(arrays) * 1000, 1) / Fraction(total_ms).limit_denominator(1000)), tags
    else:
        fps, metadata = Fraction(10), tags  # no timing at all: browsers' 100 ms default
    frames = _expand_merged(arrays, durations, fps)
    if record is not None and len(frames) != record.get("frames", len(frames)) and len(arrays) == 1:
        frames = arrays * int(record["frames"])  # a clip of one repeated frame is written as a still image
    return Video(from_uint8(frames), fps, metadata)


def _expand_merged(arrays: list[np.ndarray], durations: list[float], fps: Fraction) -> list[np.ndarray]:
    """Pillow (GIF, APNG) and libwebp merge runs of identical frames into one frame shown longer; repeat each
    frame by its duration in frame periods so the frame count comes back."""
    if not durations or not all(durations):
        return arrays
    period = 1000 / float(fps)
    counts = [max(1, round(duration / period)) for duration in durations]
    return [array for array, count in zip(arrays, counts, strict=True) for _ in range(count)]


# --------------------------------------------------------------------------------------- frame folder


def frame_name(index: int) -> str:
    return f"frame_{index:05d}.png"


def _save_frames(video: Video, folder: Path, compress_level: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    first_info = PngInfo()
    for key, value in video.metadata.items():
        first_info.add_text(key, value)
    for index, array in enumerate(to_uint8(video.frames)):
        Image.fromarray(array).save(folder / frame_name(index), pnginfo=first_info if index == 0 else None,
                                    compress_level=compress_level)
    sidecar = {"fps": f"{video.fps.numerator}/{video.fps.denominator}", "num_frames": video.num_frames,
               "metadata": dict(video.metadata)}
    (folder / FRAMES_SIDECAR).write_text(json.dumps(sidecar, indent=1))


def _load_frames(folder: Path, fps: Fraction | float | None) -> Video:
    from fewstep.app.api import open_image

    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not names:
        raise ValueError(f"frame folder {folder.name!r} holds no .png frames")
    sidecar_path = folder / FRAMES_SIDECAR
    sidecar = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
    if "fps" not in sidecar and fps is None:
        raise ValueError(f"frame folder {folder.name!r} has no {FRAMES_SIDECAR} recording its frame rate; give fps")
    arrays = []
    for name in names:
        with open_image(folder / name) as image:
            arrays.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    if len({array.shape for array in arrays}) != 1:
        raise ValueError(f"frame folder {folder.name!r} mixes frame sizes {sorted({a.shape[:2] for a in arrays})}")
    rate = as_fps(Fraction(sidecar["fps"])) if "fps" in sidecar else as_fps(fps)  # type: ignore[arg-type]
    return Video(from_uint8(arrays), rate, sidecar.get("metadata", {}))
