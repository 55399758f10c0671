"""The analytic tracker on synthetic motion drawn directly (not with the clip renderer)."""

import numpy as np
import torch

from fewstep.nodes.zoo import data
from fewstep.nodes.zoo.video import tracker


def _disc_clip(path: list[tuple[float, float]], colour: str = "green", r: float = 5.0) -> np.ndarray:
    ys, xs = np.mgrid[0:64, 0:64] + 0.5
    out = np.empty((len(path), 64, 64, 3), np.uint8)
    out[:] = data.BACKGROUND
    for t, (x, y) in enumerate(path):
        out[t][(xs - x) ** 2 + (ys - y) ** 2 <= r * r] = data.COLOURS[colour]
    return out


def test_track_recovers_the_centre():
    path = [(10.0 + 3 * t, 40.0) for t in range(6)]
    centres = tracker.track(_disc_clip(path), "green")
    np.testing.assert_allclose(centres, np.array(path), atol=0.3)  # pixel-grid discretisation of a r=5 disc


def test_classify_each_motion():
    line = [(20.0 + 2.5 * t, 30.0) for t in range(8)]
    assert tracker.motion_of(_disc_clip(line), "green") == "moving right"
    assert tracker.motion_of(_disc_clip(line[::-1]), "green") == "moving left"
    assert tracker.motion_of(_disc_clip([(30.0, 15.0 + 3 * t) for t in range(8)]), "green") == "moving down"
    assert tracker.motion_of(_disc_clip([(30.0, 45.0 - 3 * t) for t in range(8)]), "green") == "moving up"
    assert tracker.motion_of(_disc_clip([(30.0, 30.0)] * 8), "green") == "standing still"
    hops = [(30.0, 45.0 - 14 * abs(np.sin(np.pi * t / 6))) for t in range(8)]
    assert tracker.motion_of(_disc_clip(hops), "green") == "bouncing"


def test_other_colours_are_ignored_and_absence_is_lost():
    clip = _disc_clip([(20.0 + 3 * t, 30.0) for t in range(8)], colour="red")
    assert tracker.motion_of(clip, "blue") == "lost"
    assert tracker.motion_of(torch.from_numpy(clip).float() / 255, "red") == "moving right"
