"""GEGLU ``a * gelu(g)`` of a projection h = [a | g]: the PyTorch reference, the Triton launcher, the op.

* :func:`reference_geglu` — ``h.chunk(2, -1)``, exact GELU, product, in float32; returned in h's dtype.
* :func:`geglu` — the op on h [..., 2F] -> [..., F]: Triton (``kernels.geglu_triton``, one launch) on CUDA
  when h's last axis is contiguous and no gradient is needed; PyTorch's two ops (what diffusers runs)
  elsewhere. ``backend``: "auto", "triton" (forced; on the CPU only under ``TRITON_INTERPRET=1``) or
  "reference".
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fewstep.kernels import triton_modules


def _triton_module() -> Any | None:
    """``kernels.geglu_triton``, or None where Triton does not import."""
    return triton_modules.load("geglu_triton")


def reference_geglu(h: torch.Tensor) -> torch.Tensor:
    """a * gelu(g) for h = [a | g] along the last axis (exact erf GELU), computed in float32."""
    a, g = h.float().chunk(2, dim=-1)
    return (a * F.gelu(g)).to(h.dtype)


def _rows(h: torch.Tensor) -> torch.Tensor | None:
    """h as a [M, 2F] matrix with unit stride along the row (a view), or None if it cannot be one."""
    if h.stride(-1) != 1:
        return None
    try:
        return h.view(-1, h.shape[-1])
    except RuntimeError:
        return None


def geglu_triton(h: torch.Tensor) -> torch.Tensor:
    """The one-launch kernel: h [..., 2F] (rows contiguous) -> y [..., F], contiguous, h's dtype."""
    mod = _triton_module()
    if mod is None:
        raise RuntimeError("geglu_triton: Triton is not importable here")
    if h.shape[-1] % 2:
        raise ValueError(f"geglu: the last axis must be even (a | g), got {h.shape[-1]}")
    rows = _rows(h)
    if rows is None:
        raise ValueError(f"geglu_triton: h's rows must be contiguous, got strides {h.stride()}")
    m, f = rows.shape[0], rows.shape[1] // 2
    y = torch.empty((m, f), device=h.device, dtype=h.dtype)
    block_m, block_f = 8, 256
    grid = (-(-m // block_m), -(-f // block_f))
    mod._geglu_kernel[grid](rows, y, m, f, rows.stride(0), y.stride(0), BLOCK_M=block_m, BLOCK_F=block_f,
                            num_warps=4)
    return y.view(*h.shape[:-1], f)


def _auto_uses_triton(h: torch.Tensor) -> bool:
    if not h.is_cuda or (torch.is_grad_enabled() and h.requires_grad) or _rows(h) is None:
        return False
    return _triton_module() is not None


def geglu(h: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """a * gelu(g) of h = [a | g] (last axis); see the module docstring for ``backend``."""
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"geglu: backend must be 'auto', 'triton' or 'reference', got {backend!r}")
    if backend == "triton" or (backend == "auto" and _auto_uses_triton(h)):
        return geglu_triton(h)
    a, g = h.chunk(2, dim=-1)                              # diffusers' own ops: CPU path unchanged
    return a * F.gelu(g)


def triton_available(device: torch.device) -> bool:
    return triton_modules.runs_on("geglu_triton", device)
