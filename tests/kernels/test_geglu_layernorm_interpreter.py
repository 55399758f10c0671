"""Runs the GEGLU / add + LayerNorm kernel tests on the CPU through Triton's interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_geglu_layernorm_kernels_under_triton_interpreter():
    pytest.importorskip("triton")
    here = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    args = ["-q", "-m", "gpu", "-p", "no:cacheprovider", str(here / "test_geglu_layernorm_kernels.py")]
    proc = subprocess.run([sys.executable, "-m", "pytest", *args], env=env, capture_output=True, text=True,
                          cwd=here.parent.parent, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout
