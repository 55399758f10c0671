"""GroupNorm with an optional fused SiLU: the PyTorch reference, the Triton launcher and a drop-in module.

* :func:`reference_group_norm` — ``F.group_norm`` (then ``F.silu``), computed in float32 and returned
  in x's dtype: the numerics the kernel must match.
* :func:`group_norm` — the op; Triton (``kernels.groupnorm_triton``) on CUDA for NCHW-contiguous or
  channels-last 3-D/4-D inputs inside :func:`for_graphs` (CUDA-graph warm-up and capture) or from
  ``EAGER_MIN_NUMEL`` elements; PyTorch's GroupNorm elsewhere (CPU, autograd, small eager calls).
* :class:`FusedGroupNorm` — an ``nn.GroupNorm`` stand-in sharing its parameters, with ``silu`` folded
  in; what ``nodes.core.vae_fast.fuse_groupnorms`` swaps into decoders and UNets.

Why: in a diffusers VAE decoder or UNet every GroupNorm is followed by a SiLU (ResnetBlock2D, the
final norm) or a projection; PyTorch runs statistics, the affine and the SiLU as separate passes and
its statistics kernel uses one block per (sample, group), far below memory bandwidth at batch 1.
``backend``: "auto" (Triton on CUDA when it imports), "triton" (forced; on the CPU only under
``TRITON_INTERPRET=1``) or "reference".
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from fewstep.kernels import triton_modules

# Whether "auto" may launch the kernels on small tensors: True only inside :func:`for_graphs`. Each call
# costs three Python-side Triton launches (tens of microseconds each); replayed from a CUDA graph they
# cost nothing. Eagerly, a batch-1 SD1.5 UNet prepared with channels-last + these kernels ran 57.5 ms
# against 28.8 ms unprepared (H200, 2026-11-30; the launches' share was not separated), so small eager
# calls keep PyTorch's kernel. A ContextVar: a capture in one thread does not switch another thread's calls.
_IN_GRAPHS: contextvars.ContextVar[bool] = contextvars.ContextVar("fewstep_groupnorm_in_graphs", default=False)
EAGER_MIN_NUMEL = 1 << 22      # outside graphs: kernels only from 4M elements (e.g. a 512^2 VAE activation)


@contextlib.contextmanager
def for_graphs() -> Iterator[None]:
    """Inside: "auto" uses the Triton kernels at every size. Wrap the warm-up and the capture of a CUDA
    graph in it (the warm-up compiles the kernels, so nothing compiles while capturing)."""
    token = _IN_GRAPHS.set(True)
    try:
        yield
    finally:
        _IN_GRAPHS.reset(token)


def _triton_module() -> Any | None:
    """``kernels.groupnorm_triton``, or None where Triton does not import."""
    return triton_modules.load("groupnorm_triton")


def reference_group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None,
                         bias: torch.Tensor | None, eps: float, silu: bool = False,
                         pre: torch.Tensor | None = None) -> torch.Tensor:
    """GroupNorm (Wu & He 2018, Eq. 1-2: per (sample, group) mean/variance over channels x pixels,
    biased variance) of x + pre (pre [N, C], broadcast over pixels; None: nothing added) then optionally
    SiLU, in float32; returned in x's dtype."""
    w = None if weight is None else weight.float()
    b = None if bias is None else bias.float()
    xf = x.float() if pre is None else x.float() + _per_channel(pre, x).float()
    y = F.group_norm(xf, num_groups, w, b, eps)
    return (F.silu(y) if silu else y).to(x.dtype)


def _per_channel(pre: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """pre [N, C] (or [N, C, 1, ...]) viewed to broadcast over x [N, C, *spatial]."""
    if pre.numel() != x.shape[0] * x.shape[1]:
        raise ValueError(f"group_norm: pre must hold N x C = {x.shape[0]} x {x.shape[1]} values, got {tuple(pre.shape)}")
    return pre.reshape(x.shape[0], x.shape[1], *([1] * (x.ndim - 2)))


def _strides(x: torch.Tensor) -> tuple[int, int, int] | None:
    """(sn, sp, sc) of x read as [N, P, C] (P = pixels), or None for a layout the kernel does not take."""
    n, c = x.shape[:2]
    p = x[0, 0].numel()
    if x.is_contiguous():
        return c * p, 1, p                                                    # NCHW
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return p * c, c, 1                                                    # NHWC
    if x.ndim == 3 and x.transpose(1, 2).is_contiguous():
        return p * c, c, 1                                   # [N, P, C] tokens seen as [N, C, P] (attention)
    return None


def _split(n: int, p: int, c_blocks: int, block_p: int, target: int = 1024) -> tuple[int, int]:
    """(S, CHUNK): split the pixel axis into S chunks of CHUNK pixels (a multiple of block_p) so that
    N * S * c_blocks programs (~``target``, several per SM of a 132-SM card) share the statistics."""
    want = max(1, min(-(-target // (n * c_blocks)), -(-p // block_p)))
    chunk = -(-p // want)
    chunk = -(-chunk // block_p) * block_p
    return -(-p // chunk), chunk


def group_norm_triton(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      eps: float, silu: bool = False, pre: torch.Tensor | None = None) -> torch.Tensor:
    """The three-kernel GroupNorm(+SiLU) of ``kernels.groupnorm_triton``: x [N, C, *spatial] (NCHW
    contiguous or channels-last) -> y, same shape, strides and dtype; ``pre`` [N, C] is added first."""
    mod = _triton_module()
    if mod is None:
        raise RuntimeError("group_norm_triton: Triton is not importable here")
    strides = _strides(x)
    if strides is None:
        raise ValueError(f"group_norm_triton: x must be contiguous or channels-last, got strides {x.stride()}")
    n, c = x.shape[:2]
    if c % num_groups:
        raise ValueError(f"group_norm_triton: {c} channels do not split into {num_groups} groups")
    p = x[0, 0].numel()
    nhwc = strides[2] == 1
    block_c = 64 if nhwc else 16
    block_p = 32 if nhwc else 128
    c_blocks = -(-c // block_c)
    s, chunk = _split(n, p, c_blocks, block_p)
    has_pre = pre is not None
    pre_nc = _per_channel(pre, x).reshape(n, c).contiguous() if has_pre else x   # x: an unused pointer
    part = torch.empty((n, s, 2, c), device=x.device, dtype=torch.float32)
    mod._stats_kernel[(n, s, c_blocks)](x, pre_nc, part, p, c, chunk, *strides, BLOCK_P=block_p,
                                        BLOCK_C=block_c, PRE=has_pre, num_warps=4)
    scale = torch.empty((n, c), device=x.device, dtype=torch.float32)
    shift = torch.empty_like(scale)
    cg = c // num_groups
    block_g = triton_next_pow2(cg)
    affine = weight is not None
    mod._finalize_kernel[(n, num_groups)](part, weight if affine else scale, bias if affine else scale,
                                          scale, shift, p, c, chunk, s, cg, float(eps),
                                          BLOCK_S=max(1, min(64, 4096 // block_g)), BLOCK_G=block_g,
                                          AFFINE=affine, num_warps=4)
    y = torch.empty_like(x)                                      # keeps x's memory format
    grid = (n * -(-p // block_p), c_blocks)
    mod._apply_kernel[grid](x, pre_nc, y, scale, shift, p, c, *strides, SILU=silu, BLOCK_P=block_p,
                            BLOCK_C=block_c, PRE=has_pre, num_warps=4)
    return y


def triton_next_pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


def triton_available(device: torch.device) -> bool:
    """True when the kernels can run on ``device`` (CUDA + Triton, or the Triton CPU interpreter)."""
    return triton_modules.runs_on("groupnorm_triton", device)


def _auto_uses_triton(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    """CUDA, no autograd, a layout the kernel reads, and either inside :func:`for_graphs` or a large x."""
    if not x.is_cuda or x.ndim not in (3, 4) or _strides(x) is None:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or (weight is not None and weight.requires_grad)):
        return False
    return (_IN_GRAPHS.get() or x.numel() >= EAGER_MIN_NUMEL) and triton_available(x.device)


def group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
               eps: float, silu: bool = False, backend: str = "auto", pre: torch.Tensor | None = None) -> torch.Tensor:
    """GroupNorm(+SiLU) of x + pre (x [N, C, *spatial], pre [N, C] or None); ``backend``: see the module
    docstring."""
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"group_norm: backend must be 'auto', 'triton' or 'reference', got {backend!r}")
    if backend == "triton":
        return group_norm_triton(x, num_groups, weight, bias, eps, silu, pre)
    if backend == "auto" and _auto_uses_triton(x, weight):
        return group_norm_triton(x, num_groups, weight, bias, eps, silu, pre)
    if pre is not None:                                    # the eager ops diffusers runs: h + temb, then norm
        x = x + _per_channel(pre, x)
    y = F.group_norm(x, num_groups, weight, bias, eps)                 # PyTorch's own kernel: CPU path unchanged
    return F.silu(y) if silu else y


class FusedGroupNorm(torch.nn.Module):
    """``nn.GroupNorm`` (sharing its weight and bias), optionally followed by SiLU, on the fused kernel.

    Args:
        norm: the GroupNorm to stand in for (its parameters are shared, not copied).
        silu: apply SiLU after the norm (the caller removes the SiLU that followed it).
    """

    def __init__(self, norm: torch.nn.GroupNorm, silu: bool = False) -> None:
        super().__init__()
        self.num_groups, self.num_channels, self.eps = norm.num_groups, norm.num_channels, norm.eps
        self.affine, self.silu = norm.affine, silu
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
        """Norm (+SiLU) of x + pre (pre [N, C]: e.g. a ResnetBlock2D's time embedding; None adds nothing)."""
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps, self.silu, pre=pre)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, silu={self.silu}"
