"""Where the kernel tests run: CUDA, or the CPU under Triton's interpreter (``TRITON_INTERPRET=1``), and
which dtypes each place checks (the interpreter computes half-precision dots on the CPU, so it checks
float32 only)."""

from __future__ import annotations

import os

import pytest
import torch


def kernel_device() -> torch.device:
    """CUDA when present, the CPU under ``TRITON_INTERPRET=1``; otherwise the test is skipped."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return torch.device("cpu")
    pytest.skip("needs CUDA or TRITON_INTERPRET=1")


def kernel_dtypes(device: torch.device, *, with_float32: bool = True) -> list[torch.dtype]:
    """fp16 and bf16 (and float32 when asked) on CUDA; float32 under the interpreter."""
    if device.type != "cuda":
        return [torch.float32]
    return [torch.float16, torch.bfloat16] + ([torch.float32] if with_float32 else [])


def assert_close_in_ulps(y: torch.Tensor, ref: torch.Tensor, tolerance: float) -> None:
    """Every element finite and within ``tolerance`` x max|ref| of the float64 reference."""
    assert torch.isfinite(y).all()
    err = float((y.double() - ref.double()).abs().max())
    scale = float(ref.double().abs().max())
    assert err <= tolerance * scale, f"max error {err} > {tolerance} * {scale}"
