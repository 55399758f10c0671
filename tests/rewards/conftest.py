"""Offline hubs, single-threaded torch (fixture in tests/conftest.py), real renders of held-out scenes."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_torch_thread: None) -> None:
    """Every test here runs under ``one_torch_thread``."""


@pytest.fixture(scope="module")
def renders():
    """(IMAGE [8,64,64,3], scenes, captions) of 8 held-out procedural scenes."""
    import numpy as np
    import torch

    from fewstep.nodes.zoo import data

    scenes = data.make_split("heldout", 8, seed=0)
    images = torch.stack([torch.from_numpy(np.asarray(data.render(s), dtype=np.float32) / 255.0) for s in scenes])
    return images, scenes, [data.caption(s) for s in scenes]
