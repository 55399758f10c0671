"""Shared toy fixture: the exact Gaussian-mixture teacher and a student that starts as the teacher."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Toy tensors are tiny: intra-op threads only add overhead (measured: 1.2 s vs 6 s per 50 steps
    on a busy 2-core box), so these tests run single-threaded and restore the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy():
    from nodes.mlcm.toy import toy_setup

    return toy_setup()
