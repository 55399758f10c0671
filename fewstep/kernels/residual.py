"""h + r + bias (per channel): the PyTorch reference, the in-place Triton op.

* :func:`reference_add_bias_residual` — ``h + r + bias[None, :, None, None]`` in float32, in h's dtype.
* :func:`add_bias_residual_` — the same into h, in place: Triton (``kernels.residual_triton``, one pass)
  when h and r share a layout (NCHW-contiguous or channels-last) on CUDA (or ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

from typing import Any

import torch

from fewstep.kernels import triton_modules


def _triton_module() -> Any | None:
    """``kernels.residual_triton``, or None where Triton does not import."""
    return triton_modules.load("residual_triton")


def reference_add_bias_residual(h: torch.Tensor, r: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (h.ndim - 2)
    return (h.float() + r.float() + bias.float().view(shape)).to(h.dtype)


def _inner(h: torch.Tensor) -> int | None:
    """Elements between consecutive channels in h's storage order: H*W (NCHW), 1 (NHWC); None otherwise."""
    if h.is_contiguous():
        return h[0, 0].numel()
    if h.ndim == 4 and h.is_contiguous(memory_format=torch.channels_last):
        return 1
    return None


def supported(h: torch.Tensor, r: torch.Tensor) -> bool:
    """Whether the kernel takes (h, r): same shape, dtype and strides, a layout it reads, Triton here."""
    return (h.shape == r.shape and h.dtype == r.dtype and h.stride() == r.stride() and h.ndim >= 2
            and _inner(h) is not None and _triton_module() is not None)


def add_bias_residual_(h: torch.Tensor, r: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """h += r + bias[c] (c = dim 1) in one pass; returns h. Raises ValueError for inputs the kernel does
    not take (check :func:`supported` first)."""
    if not supported(h, r):
        raise ValueError(f"add_bias_residual_: h and r must share shape, dtype and an NCHW or NHWC layout; got "
                         f"{tuple(h.shape)} {h.stride()} / {tuple(r.shape)} {r.stride()}")
    if bias.numel() != h.shape[1]:
        raise ValueError(f"add_bias_residual_: bias has {bias.numel()} values for {h.shape[1]} channels")
    numel, block = h.numel(), 1024
    _triton_module()._add_bias_residual_kernel[(-(-numel // block),)](h, r, bias.contiguous(), numel, h.shape[1],
                                                                      _inner(h), BLOCK=block, num_warps=4)
    return h
