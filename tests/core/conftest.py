"""Shared settings for the core-pack tests: offline hubs, one CPU thread for tiny tensors."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    # The tensors here are tiny; with other jobs on a 2-core machine, torch's thread pool spin-waits and
    # a 7 ms denoiser call measured 30x slower. One thread is faster and deterministic.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
