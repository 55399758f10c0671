"""Choice lists the node schemas show, kept free of torch so listing nodes stays light (the libraries that
implement them check they match: ``primitives.SHAPES`` / ``COLOURS``)."""

from __future__ import annotations

SHAPE_NAMES: tuple[str, ...] = ("sphere", "cube", "torus", "cylinder", "capsule")
COLOUR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "white", "grey")
COLOURINGS: tuple[str, ...] = ("position", *COLOUR_NAMES)
