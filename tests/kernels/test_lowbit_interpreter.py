"""Runs the Triton kernel tests on the CPU through Triton's interpreter (TRITON_INTERPRET=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_kernels_under_triton_interpreter():
    pytest.importorskip("triton")
    here = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    cuda_only = "not int_mm_plan and not tune_returns"          # cuBLASLt and CUDA-event timing
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                           "-k", cuda_only, str(here / "test_lowbit_kernels.py")], env=env, capture_output=True, text=True,
                          cwd=here.parent.parent, timeout=1800)   # ~230 cases, interpreted
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout
