"""Residual add + LayerNorm: the PyTorch reference, the Triton launcher and the op.

* :func:`reference_add_layer_norm` — ``s = a + r`` in the inputs' dtype, ``F.layer_norm(s)`` in float32.
* :func:`add_layer_norm` — (s, LN(s)) for a, r [..., C]: Triton (``kernels.layernorm_triton``, one
  launch) on CUDA for contiguous inputs with C <= 4096 and no gradient; PyTorch's add + LayerNorm (what
  diffusers runs) elsewhere.
* :func:`layer_norm` — LN(a) alone, on the same terms (the first norm of a transformer block). ``backend``: "auto", "triton" (forced; on the CPU only under
  ``TRITON_INTERPRET=1``) or "reference".
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fewstep.kernels import triton_modules

MAX_C = 4096      # one row in registers per program


def _triton_module() -> Any | None:
    """``kernels.layernorm_triton``, or None where Triton does not import."""
    return triton_modules.load("layernorm_triton")


def reference_add_layer_norm(a: torch.Tensor, r: torch.Tensor, weight: torch.Tensor | None,
                             bias: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    s = a + r
    w = None if weight is None else weight.float()
    b = None if bias is None else bias.float()
    return s, F.layer_norm(s.float(), (s.shape[-1],), w, b, eps).to(s.dtype)


def add_layer_norm_triton(a: torch.Tensor, r: torch.Tensor, weight: torch.Tensor | None,
                          bias: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    mod = _triton_module()
    if mod is None:
        raise RuntimeError("add_layer_norm_triton: Triton is not importable here")
    if a.shape != r.shape or a.dtype != r.dtype or not (a.is_contiguous() and r.is_contiguous()):
        raise ValueError(f"add_layer_norm: a and r must be contiguous, of one shape and dtype; got "
                         f"{tuple(a.shape)} {a.dtype} / {tuple(r.shape)} {r.dtype}")
    c = a.shape[-1]
    if c > MAX_C:
        raise ValueError(f"add_layer_norm_triton: rows of {c} > {MAX_C} channels")
    m = a.numel() // c
    s, y = torch.empty_like(a), torch.empty_like(a)
    block_m, block_c, warps = _launch_params(c)
    affine = weight is not None
    mod._add_layer_norm_kernel[(-(-m // block_m),)](a, r, s, y, weight if affine else a, bias if bias is not None
                                                    else (weight if affine else a), m, c, float(eps),
                                                    BLOCK_M=block_m, BLOCK_C=block_c, AFFINE=affine,
                                                    num_warps=warps)
    return s, y


def _launch_params(c: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_C, num_warps) for rows of c channels held in registers."""
    block_c = 1 << max(0, (c - 1).bit_length())
    return max(1, min(16, 4096 // block_c)), block_c, 4 if block_c <= 1024 else 8


def layer_norm_triton(a: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      eps: float) -> torch.Tensor:
    mod = _triton_module()
    if mod is None:
        raise RuntimeError("layer_norm_triton: Triton is not importable here")
    if not a.is_contiguous() or a.shape[-1] > MAX_C:
        raise ValueError(f"layer_norm_triton: a must be contiguous with <= {MAX_C} channels, got {tuple(a.shape)}")
    c = a.shape[-1]
    m = a.numel() // c
    y = torch.empty_like(a)
    block_m, block_c, warps = _launch_params(c)
    affine = weight is not None
    mod._layer_norm_kernel[(-(-m // block_m),)](a, y, weight if affine else a, bias if bias is not None
                                                else (weight if affine else a), m, c, float(eps),
                                                BLOCK_M=block_m, BLOCK_C=block_c, AFFINE=affine, num_warps=warps)
    return y


def layer_norm(a: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
               backend: str = "auto") -> torch.Tensor:
    """LayerNorm over the last axis; ``backend`` as :func:`add_layer_norm`."""
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"layer_norm: backend must be 'auto', 'triton' or 'reference', got {backend!r}")
    if backend == "triton" or (backend == "auto" and _auto_uses_triton(a, a, weight, bias)):
        return layer_norm_triton(a, weight, bias, eps)
    return F.layer_norm(a, (a.shape[-1],), weight, bias, eps)


def _auto_uses_triton(a: torch.Tensor, r: torch.Tensor, weight: torch.Tensor | None,
                      bias: torch.Tensor | None) -> bool:
    if not a.is_cuda or a.shape != r.shape or a.dtype != r.dtype or a.shape[-1] > MAX_C:
        return False
    if not (a.is_contiguous() and r.is_contiguous()) or (weight is None) != (bias is None):
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (a, r, weight, bias)):
        return False
    return _triton_module() is not None


def add_layer_norm(a: torch.Tensor, r: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                   eps: float, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(a + r, LayerNorm(a + r)) over the last axis; see the module docstring for ``backend``."""
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"add_layer_norm: backend must be 'auto', 'triton' or 'reference', got {backend!r}")
    if backend == "triton" or (backend == "auto" and _auto_uses_triton(a, r, weight, bias)):
        return add_layer_norm_triton(a, r, weight, bias, eps)
    s = a + r                                               # diffusers' own ops: CPU path unchanged
    return s, F.layer_norm(s, (s.shape[-1],), weight, bias, eps)
