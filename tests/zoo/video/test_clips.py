"""Procedural clips: captions name the motion that is rendered; the held-out split is disjoint."""

import random

import numpy as np
import pytest

from fewstep.nodes.zoo import data
from fewstep.nodes.zoo.video import clips, tracker


def test_caption_grammar_round_trips():
    for text in clips.all_captions():
        spec = clips.parse_caption(text)
        assert spec is not None and spec.caption() == text
    assert clips.parse_caption("a red circle") is None
    assert clips.parse_caption("A Small red circle moving right.").motion == "moving right"


@pytest.mark.parametrize("motion", clips.MOTIONS)
@pytest.mark.parametrize("frames", [8, 16])
def test_rendered_motion_matches_caption(motion, frames):
    """The tracker reads the caption's motion from every rendered clip, for every shape/colour/size."""
    rng = random.Random(f"{motion}{frames}")
    for shape in data.SHAPES:
        colour, size = rng.choice(list(data.COLOURS)), rng.choice(list(data.SIZES))
        spec = clips.sample_start(shape, colour, size, motion, frames, rng)
        video = clips.render_clip(spec)
        assert video.shape == (frames, 64, 64, 3) and video.dtype == np.uint8
        assert tracker.motion_of(video, colour) == motion, spec.caption()


def test_trajectories_stay_inside_the_frame():
    rng = random.Random(0)
    for text in clips.all_captions()[::7]:
        spec = clips.spec_for_caption(text, 16, rng)
        xy = clips.trajectory(spec)
        reach = 1.15 * spec.radius()
        assert (xy - reach >= 0).all() and (xy + reach <= 64).all(), text


def test_heldout_split_is_disjoint_and_covers_the_grammar():
    train, held = set(clips.split_captions("train")), set(clips.split_captions("heldout"))
    assert not train & held
    assert train | held == set(clips.all_captions())
    assert 20 <= len(held) <= 60  # one tenth of 360 by the hash rule
    drawn = {s.caption() for s in clips.make_split("train", 500, seed=3)}
    assert drawn <= train
    assert {s.caption() for s in clips.make_split("heldout", 50)} <= held


def test_make_split_is_deterministic_and_checks_its_arguments():
    assert clips.make_split("train", 5, seed=1) == clips.make_split("train", 5, seed=1)
    assert clips.make_split("train", 5, seed=1) != clips.make_split("train", 5, seed=2)
    with pytest.raises(ValueError, match="split"):
        clips.split_captions("test")
    with pytest.raises(ValueError, match="frames"):
        clips.sample_start("circle", "red", "small", "moving left", 40, random.Random(0))
