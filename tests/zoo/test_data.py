"""Procedural scene data: determinism, caption <-> scene round trip, split disjointness, rendering."""

import random

import numpy as np
import pytest

from fewstep.nodes.zoo import data


def _attrs(scene: data.Scene) -> list[tuple[str, str, str]]:
    return [(o.shape, o.colour, o.size) for o in scene.objects]


def test_same_seed_same_scenes_and_pixels():
    a = data.make_split("train", 20, seed=3)
    b = data.make_split("train", 20, seed=3)
    assert a == b
    assert all(np.array_equal(np.asarray(data.render(x)), np.asarray(data.render(y))) for x, y in zip(a, b, strict=True))
    c = data.make_split("train", 20, seed=4)
    assert [data.caption(s) for s in a] != [data.caption(s) for s in c]


def test_caption_round_trip_over_every_kind():
    scenes = data.make_split("train", 400, seed=0) + data.make_split("heldout", 100, seed=0)
    assert {s.kind for s in scenes} == set(data.KINDS)
    for s in scenes:
        p = data.parse_caption(data.caption(s))
        assert p is not None, data.caption(s)
        assert p.kind == s.kind and p.relation == s.relation
        assert _attrs(p) == _attrs(s), data.caption(s)  # same objects in the same reading order


def test_parse_fixes_reading_order_and_cells():
    p = data.parse_caption("A small red circle right of a large blue square.")
    assert _attrs(p) == [("square", "blue", "large"), ("circle", "red", "small")]
    p = data.parse_caption("a large white cross at the bottom left")
    assert (p.objects[0].row, p.objects[0].col) == (2, 0)
    assert len(data.parse_caption("three small green triangles").objects) == 3
    assert data.parse_caption("a photo of a cat") is None
    assert data.parse_caption("a small pink circle at the top") is None  # colour outside the vocabulary


def test_splits_share_no_caption():
    train = {data.caption(s) for s in data.make_split("train", 3000, seed=0)}
    held = {data.caption(s) for s in data.make_split("heldout", 500, seed=0)}
    assert len(held) > 300 and not train & held
    assert all(data.split_of(s) == "heldout" for s in data.make_split("heldout", 50, seed=9))


def test_render_draws_the_colour_in_its_cell():
    s = data.Scene((data.Obj("square", "red", "large", 0, 2),), "single")
    img = np.asarray(data.render(s)).astype(int)
    assert img.shape == (64, 64, 3)
    cx, cy = int(2.5 * 64 / 3), int(0.5 * 64 / 3)
    assert tuple(img[cy, cx]) == data.COLOURS["red"]
    assert tuple(img[54, 10]) == data.BACKGROUND  # bottom-left cell stays empty
    # anti-aliasing: the circle's border has values strictly between background and fill
    c = data.Scene((data.Obj("circle", "red", "large", 1, 1),), "single")
    red = np.asarray(data.render(c))[..., 0].astype(int)
    assert ((red > data.BACKGROUND[0]) & (red < data.COLOURS["red"][0])).sum() > 8


def test_perturb_changes_exactly_one_caption_slot():
    rng = random.Random(0)
    for s in data.make_split("train", 200, seed=1):
        neg = data.perturb(s, rng)
        assert data.caption(neg) != data.caption(s)
        diff = sum(a != b for a, b in zip(data.caption(s).split(), data.caption(neg).split(), strict=True))
        assert diff == 1  # one attribute word, or the relation word ("left" <-> "right", "above" <-> "below")


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="split"):
        data.make_split("test", 3)
    with pytest.raises(ValueError, match="no grid cell"):
        data.render(data.parse_caption("three small green triangles"))
