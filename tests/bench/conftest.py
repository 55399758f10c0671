"""Shared settings for the experiment tests (``fewstep.bench``): offline hubs, one CPU thread for tiny tensors."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Tiny tensors: every test here runs under ``one_torch_thread`` (tests/conftest.py)."""
