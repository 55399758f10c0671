"""Offline hubs, one torch thread (the tiny teacher: ``tiny_multiview_teacher`` in tests/conftest.py)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_torch_thread: None) -> None:
    """Every test here runs under ``one_torch_thread`` (tests/conftest.py)."""

