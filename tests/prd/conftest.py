"""Offline hubs, one torch thread, and a tiny random teacher for the PRD tests."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_torch_thread: None) -> None:
    """Every test here runs under ``one_torch_thread`` (tests/conftest.py)."""


@pytest.fixture
def tiny_teacher():
    """A random camera-conditioned teacher of the real architecture at toy width (text embeddings of 8)."""
    import torch

    from fewstep.nodes.zoo.multiview.models import PRESETS, MVUNet, make_teacher

    torch.manual_seed(0)
    return make_teacher(MVUNet(PRESETS["test"]))
