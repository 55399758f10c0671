"""MixDQ tests: tests/mixdq is put on sys.path so ``helpers`` imports by name."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; several threads on a loaded 2-core CI box thrash (measured
    here: a 2-step tiny-UNet run took 5.7 s with 2 threads under load, 0.04 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
