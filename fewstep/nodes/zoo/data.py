"""Procedural text->image scenes: 1-3 coloured shapes on a 3x3 grid, with exact captions.

Every scene is one of four kinds, and its caption is a pure function of the scene:

- ``single``:   "a small red circle at the top left"           (one object, its grid cell named)
- ``relation``: "a large blue square left of a small white cross" (two objects on one row or column)
- ``count``:    "three small green triangles"                  (2-3 identical objects, any cells)
- ``row``:      "a small red circle, a large blue square and a small white cross in a row"

Objects are always stored in *reading order* (by grid row, then column). Every caption fixes that
order (e.g. "A right of B" puts B first), so a scene parsed back from a caption knows which object is
first even when it does not know the exact cells. The attribute probe and metrics compare objects
slot by slot in that order.

Held-out split: a scene belongs to ``heldout`` when the SHA-1 of its caption falls in one tenth of the
hash space (``_is_heldout``), to ``train`` otherwise. The two splits therefore never share a caption
(not only a seed): held-out prompts are compositions the models never saw as text during training.
``make_split`` draws scenes from a split-specific seeded RNG and keeps those whose caption belongs.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 50),
    "green": (50, 185, 70),
    "blue": (60, 100, 235),
    "yellow": (235, 210, 50),
    "purple": (165, 70, 205),
    "white": (235, 235, 235),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
PLURALS: dict[str, str] = {"circle": "circles", "square": "squares", "triangle": "triangles",
                           "diamond": "diamonds", "cross": "crosses"}
SIZES: dict[str, float] = {"small": 5.5, "large": 9.5}  # object "radius" in pixels at 64x64
BACKGROUND = (36, 36, 44)
GRID = 3
CELL_NAMES: dict[tuple[int, int], str] = {
    (0, 0): "at the top left", (0, 1): "at the top", (0, 2): "at the top right",
    (1, 0): "on the left", (1, 1): "in the center", (1, 2): "on the right",
    (2, 0): "at the bottom left", (2, 1): "at the bottom", (2, 2): "at the bottom right",
}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
COUNT_WORDS: dict[int, str] = {2: "two", 3: "three"}
KINDS: dict[str, float] = {"single": 0.25, "relation": 0.35, "count": 0.15, "row": 0.25}
SPLITS: tuple[str, ...] = ("train", "heldout")
JITTER = 2.0  # max offset (pixels at 64x64) of an object from its cell centre


@dataclass(frozen=True)
class Obj:
    """One object. ``row``/``col`` are grid cells (0..2) or None when unknown (parsed captions)."""

    shape: str
    colour: str
    size: str
    row: int | None = None
    col: int | None = None
    dx: float = 0.0  # jitter in pixels at 64x64
    dy: float = 0.0

    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A scene: objects in reading order, its kind, and the relation word for ``relation`` scenes."""

    objects: tuple[Obj, ...]
    kind: str
    relation: str | None = None


# ----------------------------------------------------------------------------- sampling
def _attrs(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(SIZES))


def _obj(rng: random.Random, row: int, col: int, attrs: tuple[str, str, str] | None = None) -> Obj:
    shape, colour, size = attrs or _attrs(rng)
    return Obj(shape, colour, size, row, col, rng.uniform(-JITTER, JITTER), rng.uniform(-JITTER, JITTER))


def _relation_scene(rng: random.Random) -> Scene:
    rel = rng.choice(RELATIONS)
    a, b = sorted(rng.sample(range(GRID), 2))  # two distinct lanes along the line, a < b
    line = rng.randrange(GRID)
    cells = [(line, a), (line, b)] if rel in ("left of", "right of") else [(a, line), (b, line)]
    return Scene(tuple(_obj(rng, r, c) for r, c in cells), "relation", rel)


def _count_scene(rng: random.Random) -> Scene:
    n = rng.choice(sorted(COUNT_WORDS))
    attrs = _attrs(rng)
    cells = sorted(rng.sample([(r, c) for r in range(GRID) for c in range(GRID)], n))
    return Scene(tuple(_obj(rng, r, c, attrs) for r, c in cells), "count")


def sample_scene(rng: random.Random) -> Scene:
    """Draw one scene from ``rng`` (a ``random.Random``); deterministic given the RNG state."""
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    if kind == "single":
        return Scene((_obj(rng, rng.randrange(GRID), rng.randrange(GRID)),), "single")
    if kind == "relation":
        return _relation_scene(rng)
    if kind == "count":
        return _count_scene(rng)
    row = rng.randrange(GRID)
    return Scene(tuple(_obj(rng, row, c) for c in range(GRID)), "row")


# ----------------------------------------------------------------------------- captions
def caption(scene: Scene) -> str:
    """The exact caption of ``scene`` (lower case, no final period)."""
    objs = scene.objects
    if scene.kind == "single":
        o = objs[0]
        return f"a {o.phrase()} {CELL_NAMES[(o.row, o.col)]}"
    if scene.kind == "relation":
        # objects are in reading order: "left of"/"above" name the first object first
        first, second = (objs[0], objs[1]) if scene.relation in ("left of", "above") else (objs[1], objs[0])
        return f"a {first.phrase()} {scene.relation} a {second.phrase()}"
    if scene.kind == "count":
        o = objs[0]
        return f"{COUNT_WORDS[len(objs)]} {o.size} {o.colour} {PLURALS[o.shape]}"
    if scene.kind == "row":
        a, b, c = (o.phrase() for o in objs)
        return f"a {a}, a {b} and a {c} in a row"
    raise ValueError(f"caption: unknown scene kind {scene.kind!r}")


_COL = "|".join(COLOURS)
_SHP = "|".join(SHAPES)
_SIZ = "|".join(SIZES)
_PHRASE = rf"({_SIZ}) ({_COL}) ({_SHP})"
_PLURAL = "|".join(PLURALS.values())
_RE_SINGLE = re.compile(rf"^an? {_PHRASE} ({'|'.join(CELL_NAMES.values())})$")
_RE_RELATION = re.compile(rf"^an? {_PHRASE} ({'|'.join(RELATIONS)}) an? {_PHRASE}$")
_RE_COUNT = re.compile(rf"^(two|three) ({_SIZ}) ({_COL}) ({_PLURAL})$")
_RE_ROW = re.compile(rf"^an? {_PHRASE}, an? {_PHRASE},? and an? {_PHRASE} in a row$")


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".").strip()


def _parse_relation(m: re.Match) -> Scene:
    first = Obj(m[3], m[2], m[1])
    second = Obj(m[7], m[6], m[5])
    rel = m[4]
    objs = (first, second) if rel in ("left of", "above") else (second, first)
    return Scene(objs, "relation", rel)


def parse_caption(text: str) -> Scene | None:
    """Parse a caption of this grammar back into a Scene (cells only where the caption fixes them).

    Case, repeated spaces, "an" for "a" and a final period are tolerated. Returns None for any text
    outside the grammar (a user's free prompt), so metrics can skip it.
    """
    t = _normalise(text)
    if m := _RE_SINGLE.match(t):
        row, col = {v: k for k, v in CELL_NAMES.items()}[m[4]]
        return Scene((Obj(m[3], m[2], m[1], row, col),), "single")
    if m := _RE_RELATION.match(t):
        return _parse_relation(m)
    if m := _RE_COUNT.match(t):
        shape = {v: k for k, v in PLURALS.items()}[m[4]]
        n = {v: k for k, v in COUNT_WORDS.items()}[m[1]]
        return Scene(tuple(Obj(shape, m[3], m[2]) for _ in range(n)), "count")
    if m := _RE_ROW.match(t):
        objs = tuple(Obj(m[i + 2], m[i + 1], m[i], None, col) for col, i in enumerate((1, 4, 7)))
        return Scene(objs, "row")
    return None


def vocabulary() -> list[str]:
    """Every word and punctuation mark the caption grammar can produce (for the pruned encoder)."""
    words = set(COLOURS) | set(SHAPES) | set(PLURALS.values()) | set(SIZES) | set(COUNT_WORDS.values())
    for text in list(CELL_NAMES.values()) + list(RELATIONS) + ["a an and in a row ,"]:
        words |= set(text.replace(",", " , ").split())
    return sorted(words)


# ----------------------------------------------------------------------------- rendering
def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        h = 1.15 * r
        return [(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)]
    if shape == "triangle":  # equilateral, pointing up; circumradius 1.15 r, centroid at the centre
        h = 1.15 * r
        return [(cx, cy - h), (cx + 0.866 * h, cy + 0.5 * h), (cx - 0.866 * h, cy + 0.5 * h)]
    raise ValueError(f"_polygon: {shape!r} is not a polygon shape")


def _draw(draw: ImageDraw.ImageDraw, o: Obj, scale: float) -> None:
    if o.shape not in SHAPES or o.colour not in COLOURS or o.size not in SIZES:
        raise ValueError(f"render: unknown attribute in {o}")
    if o.row is None or o.col is None:
        raise ValueError(f"render: object {o.phrase()!r} has no grid cell (parsed scenes cannot be rendered)")
    cell = 64.0 / GRID
    cx = ((o.col + 0.5) * cell + o.dx) * scale
    cy = ((o.row + 0.5) * cell + o.dy) * scale
    r = SIZES[o.size] * scale
    fill = COLOURS[o.colour]
    if o.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif o.shape == "cross":  # a plus sign: two bars, half-thickness 0.35 r
        t = 0.35 * r
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    else:
        draw.polygon(_polygon(o.shape, cx, cy, r), fill=fill)


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` x ``size``, anti-aliased by 4x supersampling."""
    big = size * 4
    img = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        _draw(draw, o, big / 64.0)
    return img.resize((size, size), Image.Resampling.BOX)


# ----------------------------------------------------------------------------- splits
def _is_heldout(text: str) -> bool:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) % 10 == 0


def split_of(scene: Scene) -> str:
    """Which split ``scene`` belongs to ("train" or "heldout"), decided by its caption's hash."""
    return "heldout" if _is_heldout(caption(scene)) else "train"


def make_split(split: str, n: int, seed: int = 0) -> list[Scene]:
    """``n`` scenes of ``split`` ("train" or "heldout"), deterministic from ``seed``.

    The RNG is seeded with (split, seed), so a given split and seed always give the same list, and
    the caption-hash rule keeps the splits disjoint in captions whatever the seeds.
    """
    if split not in SPLITS:
        raise ValueError(f"make_split: split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"make_split: n must be >= 0, got {n}")
    rng = random.Random(f"{split}:{seed}")
    out: list[Scene] = []
    while len(out) < n:
        s = sample_scene(rng)
        if split_of(s) == split:
            out.append(s)
    return out


# ----------------------------------------------------------------------------- negatives and targets
def _change(o: Obj, attr: str, rng: random.Random) -> Obj:
    values = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES)}[attr]
    new = rng.choice([v for v in values if v != getattr(o, attr)])
    return replace(o, **{attr: new})


def perturb(scene: Scene, rng: random.Random) -> Scene:
    """A hard negative: ``scene`` with exactly one attribute changed (so its caption differs).

    One object's colour, shape or size changes; for ``count`` scenes the shared attribute changes on
    every object (a count caption names it once); for ``relation`` scenes the relation may flip
    instead ("A left of B" -> "A right of B", the objects swapping cells).
    """
    if scene.kind == "relation" and rng.random() < 0.25:
        # "A left of B" -> "A right of B": the two objects swap cells (keeping "B right of A" would
        # only paraphrase the same picture)
        flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        a, b = scene.objects
        swapped = (replace(b, row=a.row, col=a.col), replace(a, row=b.row, col=b.col))
        return replace(scene, objects=swapped, relation=flip[scene.relation])
    attr = rng.choice(("colour", "shape", "size"))
    if scene.kind == "count":
        o = _change(scene.objects[0], attr, rng)
        return replace(scene, objects=tuple(replace(x, **{attr: getattr(o, attr)}) for x in scene.objects))
    i = rng.randrange(len(scene.objects))
    objs = list(scene.objects)
    objs[i] = _change(objs[i], attr, rng)
    return replace(scene, objects=tuple(objs))


def cell_targets(scene: Scene) -> list[tuple[int, int, int]]:
    """Per grid cell (row-major, 9 cells): (colour+1 or 0 if empty, shape+1 or 0, size or -100)."""
    out = [(0, 0, -100)] * (GRID * GRID)
    colours, sizes = list(COLOURS), list(SIZES)
    for o in scene.objects:
        if o.row is None or o.col is None:
            raise ValueError(f"cell_targets: object {o.phrase()!r} has no grid cell")
        out[o.row * GRID + o.col] = (colours.index(o.colour) + 1, SHAPES.index(o.shape) + 1, sizes.index(o.size))
    return out
