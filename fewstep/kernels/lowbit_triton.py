"""Triton kernels for low-bit UNet layers: activation quantization and an implicit-GEMM W8/W4 x A8/A16 op.

One GEMM kernel serves linear layers (a plain [M, K] x [K, N] product) and convolutions (implicit GEMM
over an NHWC input: M = B*OH*OW output pixels, K = KH*KW*C, the A tile of each filter tap gathered from
the shifted input with zero padding by masking). Per op, in the kernel:

* A (``A_MODE``): 0 = fp16/bf16 activations (weight-only W8A16 / W4A16); 1 = int8 codes written by
  ``_quantize_kernel`` beforehand; 2 = fp16/bf16 activations quantized *in the A-load* with the static
  per-tensor scale (``q = clamp(round_half_away(x * (1/s)))``, the same float32 ops as
  ``kernels.reference.quantize_act``), which saves the separate quantize pass (one read of x in fp16 and
  one write + read of the int8 codes) at the price of re-quantizing each A tile once per N-tile.
* W: int8 codes [N, T*C] (T = KH*KW taps) or, with ``W4``, uint8 [N, T*ceil(C/2)] holding two int4 codes
  a byte in the halves layout of ``kernels.reference.pack_int4`` applied per tap; both halves are
  sign-extended in registers (``(p << 4) >> 4`` and ``p >> 4`` on int8) and multiplied with two A tiles.
* The accumulator is int32 (exact) for A8 and float32 for A16; the epilogue applies the fused
  dequantization ``acc * s_a * s_w[n] + bias[n]`` in float32 and stores the activation dtype.

``_dequant_kernel`` is the epilogue alone, for the int32 output of ``torch._int_mm`` (cuBLASLt).

The reference numerics are ``kernels.reference.reference_lowbit_linear`` / ``reference_lowbit_conv2d``;
``tests/kernels`` compares them on the GPU and, through ``TRITON_INTERPRET=1``, on the CPU.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _quant_codes(x, inv, QMAX: tl.constexpr):
    """int8 codes of float values ``x`` (any shape): clamp(round_half_away(x * inv), -QMAX, QMAX)."""
    v = x.to(tl.float32) * inv
    r = tl.where(v >= 0, tl.floor(v + 0.5), -tl.floor(0.5 - v))
    r = tl.minimum(tl.maximum(r, -QMAX), QMAX)
    return r.to(tl.int8)


# Shapes that vary per call (rows, image size) are not specialised: one compile per layer kind, not per shape.
@triton.jit(do_not_specialize=["M", "sxb", "sxm"])
def _quantize_kernel(x_ptr, q_ptr, s_ptr, M, C, sxb, sxm, sxc,
                     QMAX: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """q[b, m, c] = codes of x[b, m, c] with scale s; q contiguous [B, M, C]."""
    pid_m, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (rm[:, None] < M) & (rc[None, :] < C)
    x = tl.load(x_ptr + b * sxb + rm[:, None] * sxm + rc[None, :] * sxc, mask=mask, other=0.0)
    inv = tl.math.div_rn(1.0, tl.load(s_ptr))                    # IEEE 1/s, as the reference
    tl.store(q_ptr + (b * M + rm[:, None]) * C + rc[None, :], _quant_codes(x, inv, QMAX), mask=mask)


@triton.jit
def _quantize_flat_kernel(x_ptr, q_ptr, s_ptr, numel, QMAX: tl.constexpr, BLOCK: tl.constexpr):
    """Codes of a contiguous tensor as one flat array: BLOCK elements a program, 16-byte vector loads
    (the 2-D kernel above pays per-element index math and 64-byte stores per row for strided views).
    ``numel`` stays specialised: only when Triton knows it is a multiple of 16 is the tail mask constant
    over a vector, so loads and stores vectorise (with ``do_not_specialize`` this kernel took 38.9 ms of a
    133 ms SDXL W8A8 call at batch 8 on an H200 — a fraction of memory bandwidth)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    inv = tl.math.div_rn(1.0, tl.load(s_ptr))
    tl.store(q_ptr + offs, _quant_codes(x, inv, QMAX), mask=mask)


@triton.jit(do_not_specialize=["M"])
def _dequant_kernel(acc_ptr, ws_ptr, as_ptr, bias_ptr, out_ptr, M, N, HAS_BIAS: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """out[m, n] = acc[m, n] * s_a * s_w[n] + bias[n] (int32 acc [M, N] -> activation dtype)."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    acc = tl.load(acc_ptr + rm[:, None] * N + rn[None, :], mask=mask, other=0)
    scale = tl.load(ws_ptr + rn, mask=rn < N, other=0.0) * tl.load(as_ptr)
    y = acc.to(tl.float32) * scale[None, :]
    if HAS_BIAS:
        y += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + rm[:, None] * N + rn[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _a_tile(x_ptr, row_base, row_ok, ih0, iw0, H, W, C, c, inv, R: tl.constexpr, S: tl.constexpr,
            SPATIAL: tl.constexpr, A_MODE: tl.constexpr, QMAX: tl.constexpr):
    """A tile [BLOCK_M, BLOCK_K] of filter tap (R, S), channels ``c``; zero outside the image.
    A_MODE 2 returns the int8 codes of the loaded float tile (zeros stay code 0)."""
    if SPATIAL:
        ih = ih0 + R                                             # [BLOCK_M]
        iw = iw0 + S
        ok = row_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        offs = (row_base + ih * W + iw) * C                      # NHWC pixel offset
    else:
        ok = row_ok
        offs = row_base * C
    mask = ok[:, None] & (c[None, :] < C)
    a = tl.load(x_ptr + offs[:, None] + c[None, :], mask=mask, other=0)
    if A_MODE == 2:
        a = _quant_codes(a, inv, QMAX)
    return a


@triton.jit(do_not_specialize=["M", "H", "W", "OH", "OW"])
def _lowbit_gemm_kernel(
    x_ptr, w_ptr, ws_ptr, as_ptr, bias_ptr, out_ptr,
    M, N, C, H, W, OH, OW, CW, stride_wn,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr,
    PW: tl.constexpr, SPATIAL: tl.constexpr, W4: tl.constexpr, A_MODE: tl.constexpr, QMAX: tl.constexpr,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """out[m, n] = s_a * s_w[n] * sum_{tap, c} A[m, tap, c] * Wq[n, tap, c] + bias[n].

    CW is the stored weight's per-tap width: C for int8 weights, ceil(C/2) for packed int4.
    """
    # Grouped program order: GROUP_M row-tiles share the same weight columns while they are in L2.
    pid = tl.program_id(0)
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * num_n)
    first_m = group * GROUP_M
    size_m = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_n)) % size_m
    pid_n = (pid % (GROUP_M * num_n)) // size_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    row_ok = rm < M
    if SPATIAL:                                                  # m -> (image, oh, ow)
        img = rm // (OH * OW)
        pix = rm % (OH * OW)
        ih0 = (pix // OW) * SH - PH
        iw0 = (pix % OW) * SW - PW
        row_base = img * H * W                                   # first pixel of the image
    else:
        ih0 = rm
        iw0 = rm
        row_base = rm
    inv = tl.math.div_rn(1.0, tl.load(as_ptr))                  # IEEE 1/s once per program (A_MODE 2)
    w_cols = w_ptr + rn[None, :] * stride_wn                    # [1, BLOCK_N]
    n_ok = rn[None, :] < N
    if A_MODE == 0:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for tap in tl.static_range(KH * KW):
        for j0 in range(0, CW, BLOCK_K):
            j = j0 + rk                                          # stored column within this tap
            wt = tl.load(w_cols + tap * CW + j[:, None], mask=n_ok & (j[:, None] < CW), other=0)
            a_lo = _a_tile(x_ptr, row_base, row_ok, ih0, iw0, H, W, C, j, inv, tap // KW, tap % KW,
                           SPATIAL, A_MODE, QMAX)
            if W4:
                p = wt.to(tl.int8, bitcast=True)                 # [BLOCK_K, BLOCK_N] two codes a byte
                lo = (p << 4) >> 4                               # arithmetic shift sign-extends
                hi = p >> 4
                a_hi = _a_tile(x_ptr, row_base, row_ok, ih0, iw0, H, W, C, j + CW, inv,
                               tap // KW, tap % KW, SPATIAL, A_MODE, QMAX)
                if A_MODE == 0:
                    acc += tl.dot(a_lo, lo.to(a_lo.dtype))
                    acc += tl.dot(a_hi, hi.to(a_hi.dtype))
                else:
                    acc += tl.dot(a_lo, lo)
                    acc += tl.dot(a_hi, hi)
            else:
                if A_MODE == 0:
                    acc += tl.dot(a_lo, wt.to(a_lo.dtype))
                else:
                    acc += tl.dot(a_lo, wt)

    # Fused dequantization + bias, in float32.
    scale = tl.load(ws_ptr + rn, mask=rn < N, other=0.0)        # [BLOCK_N] per-channel weight scales
    if A_MODE != 0:
        scale = scale * tl.load(as_ptr)
    y = acc.to(tl.float32) * scale[None, :]
    if HAS_BIAS:
        y += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    mask = row_ok[:, None] & n_ok
    tl.store(out_ptr + rm[:, None] * N + rn[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)
