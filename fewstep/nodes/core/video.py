"""The ``VIDEO`` value: one clip of frames in ComfyUI's IMAGE layout, its frame rate and text metadata.

ComfyUI's own VIDEO (``comfy_api.latest._input.VideoInput``) is read through ``get_components()``
(images, audio, frame_rate), ``get_dimensions()`` (width, height) and ``get_duration()`` (seconds);
:class:`Video` offers the same accessors so code written against ComfyUI's type reads ours.
Reading and writing files lives in :mod:`fewstep.nodes.core.video_io`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType

import torch


@dataclass(frozen=True)
class VideoComponents:
    """What ComfyUI's ``VideoInput.get_components()`` returns: frames, audio (we carry none) and rate."""

    images: torch.Tensor
    frame_rate: Fraction
    audio: None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


def as_fps(value: Fraction | int | float | str) -> Fraction:
    """A frame rate as an exact fraction; floats become the nearest fraction with denominator ≤ 1001
    (30000 / 1001 given as a float comes back as the NTSC fraction; 29.97 stays 2997/100).
    Raises ValueError for a rate that is not a positive number."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise ValueError(f"fps must be a positive number, got {type(value).__name__}")
    try:
        fps = Fraction(value) if not isinstance(value, float) else Fraction(value).limit_denominator(1001)
    except (ValueError, ZeroDivisionError) as error:
        raise ValueError(f"fps must be a positive number, got {value!r}") from error
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {value!r}")
    return fps


@dataclass(frozen=True, eq=False)
class Video:
    """One clip.

    Args:
        frames: float32 tensor [T, H, W, 3] with values in [0, 1] on the CPU (ComfyUI's IMAGE layout,
            one clip; T >= 1).
        fps: frames per second, exact (ints and floats given here are converted by :func:`as_fps`).
        metadata: text key -> text value, written into the container where it allows (e.g. ``prompt``,
            ``workflow`` as JSON, as ComfyUI does); read-only after construction.

    Equality is identity (a tensor has no single truth value); compare ``frames`` explicitly.
    """

    frames: torch.Tensor
    fps: Fraction
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_frames(self.frames)
        object.__setattr__(self, "fps", as_fps(self.fps))
        if not isinstance(self.metadata, Mapping):
            raise ValueError(f"Video metadata must be a mapping of str to str, got {type(self.metadata).__name__}")
        for key, value in self.metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"Video metadata must map str to str; entry {key!r} holds {type(value).__name__}")
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def duration_s(self) -> float:
        """T / fps seconds (each frame shows for 1/fps)."""
        return float(self.num_frames / self.fps)

    # ComfyUI's VideoInput accessors ------------------------------------------------------------------
    def get_components(self) -> VideoComponents:
        return VideoComponents(images=self.frames, frame_rate=self.fps, metadata=self.metadata)

    def get_dimensions(self) -> tuple[int, int]:
        """(width, height), ComfyUI's order."""
        return self.width, self.height

    def get_duration(self) -> float:
        return self.duration_s

    def get_frame_count(self) -> int:
        return self.num_frames

    def get_frame_rate(self) -> Fraction:
        return self.fps

    def __reduce__(self) -> tuple[type[Video], tuple[torch.Tensor, Fraction, dict[str, str]]]:
        """Pickle with a plain dict (the read-only mapping view itself cannot be pickled)."""
        return Video, (self.frames, self.fps, dict(self.metadata))

    def with_metadata(self, extra: Mapping[str, str]) -> Video:
        """The same clip with ``extra`` merged over its metadata."""
        return Video(self.frames, self.fps, {**self.metadata, **extra})


def _check_frames(frames: object) -> None:
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"Video frames must be a torch tensor [T, H, W, 3], got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"Video frames must have shape [T, H, W, 3] (RGB), got {list(frames.shape)}")
    if min(frames.shape[:3]) < 1:
        raise ValueError(f"Video frames must hold at least one frame of at least 1x1 pixel, got {list(frames.shape)}")
    if frames.dtype != torch.float32:
        raise ValueError(f"Video frames must be float32 in [0, 1], got {frames.dtype} (convert with .float())")
    if frames.device.type != "cpu":
        raise ValueError(f"Video frames must be on the CPU, got {frames.device} (move them with .cpu())")
    low, high = float(frames.min()), float(frames.max())
    if not (low >= 0.0 and high <= 1.0):  # also catches NaN
        raise ValueError(f"Video frames must lie in [0, 1], got values in [{low}, {high}] (clamp them first)")
