"""Procedural text->video clips: one shape of ``nodes.zoo.data``'s vocabulary in motion, 64x64 frames.

A clip is one object (shape, colour, size of ``data.py``) following one of six motions, and its caption
is a pure function of the object and the motion:

- "a small red circle moving right"   (also left, up, down: constant speed ``SPEED`` px per frame)
- "a large blue square bouncing"      (|sin| hops above a floor, period ``BOUNCE_PERIOD`` frames)
- "a small white cross standing still"

The start position is drawn so the whole trajectory stays inside the frame; it is not in the caption
(the model picks a position itself). Frames are rendered by ``data.render`` (4x supersampled).

Held-out split: as in ``data.py``, a caption is held out when the SHA-1 of its text falls in one tenth
of the hash space (``data._is_heldout`` rule, re-implemented here so the rule is visible): the splits
never share a caption. Of the 360 captions (60 objects x 6 motions), 39 are held out.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass

import numpy as np

from fewstep.nodes.zoo import data

MOTIONS: tuple[str, ...] = ("moving left", "moving right", "moving up", "moving down", "bouncing", "standing still")
SPEED = 2.5            # pixels per frame (at 64x64) of the straight motions
BOUNCE_PERIOD = 6.0    # frames per hop
BOUNCE_HEIGHT = 14.0   # pixels of a hop
DIRECTIONS: dict[str, tuple[float, float]] = {
    "moving left": (-1.0, 0.0), "moving right": (1.0, 0.0), "moving up": (0.0, -1.0), "moving down": (0.0, 1.0)}
FRAMES = 8             # the default clip length (the model is trained on 8 and 16)
MAX_FRAMES = 16
FPS = 8
SIZE = 64
SPLITS = data.SPLITS
_CELL = SIZE / data.GRID


@dataclass(frozen=True)
class ClipSpec:
    """One clip: the object, its motion, where it starts (pixel centre at 64x64) and the frame count."""

    shape: str
    colour: str
    size: str
    motion: str
    x0: float = 32.0
    y0: float = 32.0
    frames: int = FRAMES

    def caption(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} {self.motion}"

    def radius(self) -> float:
        return data.SIZES[self.size]


def caption_of(shape: str, colour: str, size: str, motion: str) -> str:
    """The caption of an object and motion ("a small red circle moving right")."""
    return f"a {size} {colour} {shape} {motion}"


def all_captions() -> list[str]:
    """Every caption of the grammar (360), sorted."""
    return sorted(caption_of(s, c, z, m) for s in data.SHAPES for c in data.COLOURS for z in data.SIZES
                  for m in MOTIONS)


def is_heldout(text: str) -> bool:
    """The held-out rule of ``data.py``: the caption's SHA-1 falls in one tenth of the hash space."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) % 10 == 0


def split_captions(split: str) -> list[str]:
    """The captions of ``split`` ("train" or "heldout"), sorted; the two lists are disjoint."""
    if split not in SPLITS:
        raise ValueError(f"split_captions: split must be one of {SPLITS}, got {split!r}")
    return [c for c in all_captions() if is_heldout(c) == (split == "heldout")]


_RE = re.compile(rf"^an? ({'|'.join(data.SIZES)}) ({'|'.join(data.COLOURS)}) ({'|'.join(data.SHAPES)}) "
                 rf"({'|'.join(MOTIONS)})$")


def parse_caption(text: str) -> ClipSpec | None:
    """The (shape, colour, size, motion) of a caption of this grammar, or None for any other text."""
    m = _RE.match(re.sub(r"\s+", " ", text.strip().lower()).rstrip("."))
    return None if m is None else ClipSpec(shape=m[3], colour=m[2], size=m[1], motion=m[4])


# ----------------------------------------------------------------------------- trajectories
def _offsets(motion: str, frames: int) -> np.ndarray:
    """Displacement ``[frames, 2]`` (x, y pixels) of each frame from the start position."""
    t = np.arange(frames, dtype=np.float64)
    if motion in DIRECTIONS:
        dx, dy = DIRECTIONS[motion]
        return np.stack([dx * SPEED * t, dy * SPEED * t], axis=1)
    if motion == "bouncing":  # hops up from the floor (y grows downwards): y = y0 - H |sin(pi t / P)|
        return np.stack([0 * t, -BOUNCE_HEIGHT * np.abs(np.sin(math.pi * t / BOUNCE_PERIOD))], axis=1)
    if motion == "standing still":
        return np.zeros((frames, 2))
    raise ValueError(f"unknown motion {motion!r}; choose one of {MOTIONS}")


def trajectory(spec: ClipSpec) -> np.ndarray:
    """Object centre ``[frames, 2]`` (x, y pixels at 64x64) in every frame."""
    return np.array([spec.x0, spec.y0]) + _offsets(spec.motion, spec.frames)


def sample_start(shape: str, colour: str, size: str, motion: str, frames: int,
                 rng: random.Random) -> ClipSpec:
    """A spec with a start drawn uniformly among those keeping the whole trajectory inside the frame
    (1 px margin beyond the object's radius; a cross or diamond reaches 1.15 r)."""
    if not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be in 1..{MAX_FRAMES}, got {frames}")
    off = _offsets(motion, frames)
    margin = 1.15 * data.SIZES[size] + 1.0
    lo = margin - off.min(0)                 # start >= margin - min offset
    hi = SIZE - margin - off.max(0)          # start <= 64 - margin - max offset
    if (hi < lo).any():
        raise ValueError(f"a {size} object {motion} for {frames} frames does not fit in {SIZE} px")
    return ClipSpec(shape, colour, size, motion, rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1]), frames)


def spec_for_caption(text: str, frames: int, rng: random.Random) -> ClipSpec:
    """A random clip of caption ``text`` (start drawn by ``sample_start``)."""
    spec = parse_caption(text)
    if spec is None:
        raise ValueError(f"not a caption of the clip grammar: {text!r}")
    return sample_start(spec.shape, spec.colour, spec.size, spec.motion, frames, rng)


def make_split(split: str, n: int, frames: int = FRAMES, seed: int = 0) -> list[ClipSpec]:
    """``n`` clips of ``split``: captions cycled in a seeded random order, starts drawn per clip."""
    captions = split_captions(split)
    rng = random.Random(f"video:{split}:{seed}")
    order: list[str] = []
    while len(order) < n:
        order += rng.sample(captions, len(captions))
    return [spec_for_caption(c, frames, rng) for c in order[:n]]


# ----------------------------------------------------------------------------- rendering
def frame_scene(spec: ClipSpec, x: float, y: float) -> data.Scene:
    """The one-object ``data.Scene`` of a frame with the object centred at (x, y); its grid cell is the
    cell holding the centre (what the probe should read there)."""
    col, row = min(int(x // _CELL), data.GRID - 1), min(int(y // _CELL), data.GRID - 1)
    # data.render places an object at its cell centre + (dx, dy)
    obj = data.Obj(spec.shape, spec.colour, spec.size, row, col, x - (col + 0.5) * _CELL, y - (row + 0.5) * _CELL)
    return data.Scene((obj,), "single")


def render_clip(spec: ClipSpec) -> np.ndarray:
    """The clip as uint8 frames ``[T, 64, 64, 3]``."""
    return np.stack([np.asarray(data.render(frame_scene(spec, x, y)), dtype=np.uint8) for x, y in trajectory(spec)])


def frame_scenes(spec: ClipSpec) -> list[data.Scene]:
    """Per-frame target scenes (for the attribute probe)."""
    return [frame_scene(spec, x, y) for x, y in trajectory(spec)]
