"""Launchers of the low-bit ops and their dispatch: Triton on CUDA, the PyTorch reference elsewhere.

Public ops (all take the stored form of a quantized layer, see ``kernels.reference``):

* :func:`quantize_act_triton` — x -> int8 codes (contiguous [B, M, C] view of any strided input).
* :func:`lowbit_linear` — x [..., K] -> [..., N]; W8 or packed W4, A8 or A16, fused dequant + bias.
* :func:`lowbit_conv2d` — x [B, C, H, W] -> [B, N, OH, OW] (channels-last strides), implicit GEMM.

``backend="auto"`` uses Triton when the input is on CUDA and Triton imports, else the reference;
``"triton"`` forces the kernels (on CPU only under ``TRITON_INTERPRET=1``), ``"reference"`` the reference.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

from kernels import reference as ref


@functools.lru_cache(maxsize=1)
def _triton_module() -> Any | None:
    """The Triton kernel module, or None when Triton is unavailable (imported lazily, once)."""
    try:
        from kernels import lowbit_triton
    except Exception:  # noqa: BLE001 - any import failure means "no Triton here"
        return None
    return lowbit_triton


def triton_available(device: torch.device) -> bool:
    """True when the kernels can run on ``device`` (CUDA + Triton, or the Triton CPU interpreter)."""
    if _triton_module() is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _use_triton(x: torch.Tensor, backend: str) -> bool:
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'reference', got {backend!r}")
    if backend == "reference":
        return False
    if backend == "triton":
        if not triton_available(x.device):
            raise RuntimeError(f"Triton kernels cannot run on {x.device} (no CUDA, or Triton missing)")
        return True
    return x.device.type == "cuda" and triton_available(x.device)


def quantize_act_triton(x3: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Triton activation quantization of a 3-D (possibly strided) view [B, M, C] -> int8 [B, M, C]."""
    mod = _triton_module()
    b, m, c = x3.shape
    q = torch.empty((b, m, c), dtype=torch.int8, device=x3.device)
    block_m, block_c = 32, 64
    grid = ((m + block_m - 1) // block_m, (c + block_c - 1) // block_c, b)
    mod._quantize_kernel[grid](x3, q, scale, m, c, *x3.stride(), QMAX=ref.qmax_of(bits),
                               BLOCK_M=block_m, BLOCK_C=block_c)
    return q


def _config(m: int, a_int8: bool) -> dict[str, int]:
    """Tile shapes by problem size (fixed, no autotuning: one compile per shape class keeps start-up short)."""
    block_k = 128 if a_int8 else 64                 # 128 bytes of K per row either way
    if m >= 256:
        return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": block_k, "num_warps": 8, "num_stages": 3}
    if m >= 64:
        return {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": block_k, "num_warps": 4, "num_stages": 3}
    return {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": block_k, "num_warps": 4, "num_stages": 3}


def _launch(a: torch.Tensor, qweight: torch.Tensor, w_scale: torch.Tensor, a_scale: torch.Tensor | None,
            bias: torch.Tensor | None, out: torch.Tensor, m: int, n: int, c: int,
            geometry: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int], spatial: bool) -> None:
    mod = _triton_module()
    w4 = qweight.dtype == torch.uint8
    taps = kernel[0] * kernel[1]
    cw = qweight.shape[1] // taps
    cfg = _config(m, a_scale is not None)
    grid = (-(-m // cfg["BLOCK_M"]) * -(-n // cfg["BLOCK_N"]),)
    h, w, oh, ow = geometry
    mod._lowbit_gemm_kernel[grid](
        a, qweight, w_scale, a_scale if a_scale is not None else w_scale, bias if bias is not None else w_scale,
        out, m, n, c, h, w, oh, ow, cw, qweight.stride(0),
        KH=kernel[0], KW=kernel[1], SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
        SPATIAL=spatial, W4=w4, A_INT8=a_scale is not None, HAS_BIAS=bias is not None, GROUP_M=8, **cfg,
    )


def lowbit_linear(x: torch.Tensor, qweight: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                  a_scale: torch.Tensor | None, a_bits: int, in_features: int, *,
                  backend: str = "auto", exact: bool = False) -> torch.Tensor:
    """Quantized linear layer. x [..., K] (fp16/bf16/fp32) -> [..., N] in x's dtype.

    Args:
        qweight: int8 codes [N, K] or packed int4 uint8 [N, ceil(K/2)].
        w_scale: float32 [N]; bias: [N] or None; a_scale: float32 scalar tensor, or None for A16.
        a_bits: activation bits (<= 8) when a_scale is given.
        exact: reference path only — accumulate in float64 instead of float32.
    """
    if x.shape[-1] != in_features:
        raise ValueError(f"lowbit_linear: input has {x.shape[-1]} features, layer expects {in_features}")
    if not _use_triton(x, backend):
        return ref.reference_lowbit_linear(x, qweight, w_scale, bias, a_scale, a_bits, in_features, exact=exact)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_features)                                       # [M, K]
    m, n = x2.shape[0], w_scale.shape[0]
    if a_scale is not None:
        a = quantize_act_triton(x2.unsqueeze(0), a_scale, a_bits).view(m, in_features)
    else:
        a = x2.contiguous()
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    _launch(a, qweight, w_scale, a_scale, bias, out, m, n, in_features, (1, 1, 1, 1), (1, 1), (1, 1),
            (0, 0), spatial=False)
    return out.view(*lead, n)


def lowbit_conv2d(x: torch.Tensor, qweight: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                  a_scale: torch.Tensor | None, a_bits: int, weight_shape: tuple[int, int, int, int],
                  stride: tuple[int, int], padding: tuple[int, int], *, backend: str = "auto",
                  exact: bool = False) -> torch.Tensor:
    """Quantized conv2d (groups 1, dilation 1). x [B, C, H, W] -> [B, N, OH, OW] in x's dtype.

    qweight holds codes in [N, KH*KW*C] order (int8), or per tap packed int4 [N, KH*KW*ceil(C/2)].
    On the Triton path the output is NHWC memory viewed as NCHW (``torch.channels_last``).
    """
    n_out, c_in, kh, kw = weight_shape
    if x.dim() != 4 or x.shape[1] != c_in:
        raise ValueError(f"lowbit_conv2d: input {tuple(x.shape)} does not match weight {weight_shape}")
    if not _use_triton(x, backend):
        return ref.reference_lowbit_conv2d(x, qweight, w_scale, bias, a_scale, a_bits, weight_shape, stride,
                                           padding, exact=exact)
    b, _, h, w = x.shape
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    if x.is_contiguous(memory_format=torch.channels_last):
        x3 = x.permute(0, 2, 3, 1).reshape(b, h * w, c_in)             # [B, HW, C], a view
    else:
        x3 = x.reshape(b, c_in, h * w).transpose(1, 2)                  # [B, HW, C], strided view
    if a_scale is not None:
        a = quantize_act_triton(x3, a_scale, a_bits)                      # int8 NHWC [B, HW, C]
    else:
        a = x3.contiguous()
    m = b * oh * ow
    out = torch.empty((m, n_out), dtype=x.dtype, device=x.device)        # NHWC rows
    _launch(a, qweight, w_scale, a_scale, bias, out, m, n_out, c_in, (h, w, oh, ow), (kh, kw), stride,
            padding, spatial=True)
    return out.view(b, oh, ow, n_out).permute(0, 3, 1, 2)               # [B, N, OH, OW], channels-last
