"""Pure-PyTorch reference numerics of the low-bit ops (no Triton; runs anywhere).

These functions define what the Triton kernels in this package must compute, and they are the CPU
execution path of quantized models ("simulated quantization"). Conventions, shared by every op:

* Symmetric uniform quantization with ``qmax = 2**(bits-1) - 1`` (8 bits -> [-127, 127], 4 -> [-7, 7]);
  the code -2**(bits-1) is never produced, so negation is exact and int4 has a symmetric grid.
* Rounding is *half away from zero*, written ``sign(v) * floor(|v| + 0.5)``: it is what a kernel can
  reproduce bit-for-bit (torch.round rounds half to even), and ties are rare on real data anyway.
* Weights: one scale per output channel, ``s_w[n] = max_k |W[n, k]| / qmax`` (min-max, MixDQ §PTQ).
* Activations: one scale per tensor, ``s_a = max |x| / qmax`` over the calibration data.
* A quantized linear computes ``y[m, n] = s_a * s_w[n] * sum_k q_a[m, k] * q_w[n, k] + bias[n]``: the
  integer dot product is exact (int32 on the GPU; float64 here, exact while K * 127**2 < 2**53).
* int4 packing (``pack_int4``) stores two 4-bit codes per byte, the *halves* layout: byte ``j`` of row
  ``n`` holds code ``k = j`` in its low nibble and ``k = j + Kh`` in its high nibble, ``Kh = ceil(K/2)``.
  A GEMM kernel then runs two plain dot products per K-tile (low half, high half) with no interleave.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def qmax_of(bits: int) -> int:
    """Largest code of a symmetric ``bits``-bit grid (2**(bits-1) - 1)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"quantization bits must be in 2..8, got {bits}")
    return 2 ** (bits - 1) - 1


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    """Round to nearest, ties away from zero (what the kernels implement)."""
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


def weight_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric min-max scales, float32 [N] (weight is [N, ...])."""
    absmax = weight.detach().float().reshape(weight.shape[0], -1).abs().amax(dim=1)
    return (absmax / qmax_of(bits)).clamp_min(1e-12)


def quantize_weight(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``weight`` [N, ...] per output channel -> (int8 codes with weight's shape, scales [N])."""
    scale = weight_scales(weight, bits)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    q = round_half_away(weight.detach().float() / scale.view(shape)).clamp(-qmax_of(bits), qmax_of(bits))
    return q.to(torch.int8), scale


def act_inverse_scale(scale: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """float32 ``1 / s`` (one IEEE division, as the kernels compute it once per program)."""
    return 1.0 / torch.as_tensor(scale, dtype=torch.float32, device=device)


def quantize_act(x: torch.Tensor, scale: torch.Tensor | float, bits: int) -> torch.Tensor:
    """Per-tensor symmetric activation codes (int8) of ``x`` with a calibrated ``scale``:
    ``clamp(round_half_away(x * (1/s)))`` in float32. A multiply by the reciprocal, not a division per
    element: it is what a GEMM can afford in its A-load (one FMUL; an IEEE division is ~10 instructions
    and the fused quantize then costs more ALU time than the int8 MMA of a 3x3 conv), and both sides
    compute the same float32 product, so the codes stay bit-identical to the kernels'."""
    q = round_half_away(x.float() * act_inverse_scale(scale, x.device))
    return q.clamp(-qmax_of(bits), qmax_of(bits)).to(torch.int8)


def fake_quant(x: torch.Tensor, scale: torch.Tensor | float, bits: int) -> torch.Tensor:
    """Quantize then dequantize (x's dtype): the value the low-bit path sees."""
    s = torch.as_tensor(scale, dtype=torch.float32, device=x.device)
    return (quantize_act(x, s, bits).float() * s).to(x.dtype)


def fake_quant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-channel fake-quantized weight (weight's dtype), used by the sensitivity probes."""
    q, scale = quantize_weight(weight, bits)
    return (q.float() * scale.view((-1,) + (1,) * (weight.dim() - 1))).to(weight.dtype)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack int8 codes in [-8, 7], shape [N, K], into uint8 [N, ceil(K/2)] (halves layout, see module doc)."""
    if q.dim() != 2 or q.dtype != torch.int8:
        raise ValueError(f"pack_int4 wants int8 [N, K], got {q.dtype} {tuple(q.shape)}")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise ValueError("pack_int4: codes must lie in [-8, 7]")
    n, k = q.shape
    kh = (k + 1) // 2
    padded = F.pad(q, (0, 2 * kh - k))                          # [N, 2*Kh], zero code in the pad
    lo = padded[:, :kh].to(torch.int16) & 0xF                   # [N, Kh] two's-complement nibbles
    hi = padded[:, kh:].to(torch.int16) & 0xF
    return (lo | (hi << 4)).to(torch.uint8)


def unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: uint8 [N, ceil(K/2)] -> int8 [N, K]."""
    if packed.dtype != torch.uint8 or packed.dim() != 2 or packed.shape[1] != (k + 1) // 2:
        raise ValueError(f"unpack_int4: want uint8 [N, {(k + 1) // 2}], got {packed.dtype} {tuple(packed.shape)}")
    p = packed.to(torch.int16)
    lo, hi = p & 0xF, (p >> 4) & 0xF
    both = torch.cat([lo, hi], dim=1)                           # [N, 2*Kh]
    both = torch.where(both >= 8, both - 16, both)              # sign-extend the nibble
    return both[:, :k].to(torch.int8)


def weight_codes(qweight: torch.Tensor, w_bits: int, k: int) -> torch.Tensor:
    """int8 codes [N, K] of a stored weight (int8 [N, K], or packed uint8 when w_bits <= 4)."""
    return unpack_int4(qweight, k) if qweight.dtype == torch.uint8 else qweight.reshape(qweight.shape[0], -1)


def reference_lowbit_linear(x: torch.Tensor, qweight: torch.Tensor, w_scale: torch.Tensor,
                            bias: torch.Tensor | None, a_scale: torch.Tensor | None, a_bits: int,
                            in_features: int, *, exact: bool = True) -> torch.Tensor:
    """Quantized linear: x [..., K] -> [..., N] in x's dtype.

    ``a_scale=None`` means 16-bit activations (weight-only quantization: x @ dequant(W)^T).
    ``exact=True`` accumulates in float64 (the bit-exact integer dot, for tests); ``False`` in float32
    (the CPU simulation path, faster, exact up to float32 summation order).
    """
    acc_dtype = torch.float64 if exact else torch.float32
    w = weight_codes(qweight, 0, in_features).to(acc_dtype)                   # [N, K]
    if a_scale is None:
        y = F.linear(x.to(acc_dtype), w) * w_scale.to(acc_dtype)
    else:
        qa = quantize_act(x, a_scale, a_bits).to(acc_dtype)                   # [..., K]
        y = F.linear(qa, w) * (a_scale.to(acc_dtype) * w_scale.to(acc_dtype))
    if bias is not None:
        y = y + bias.to(acc_dtype)
    return y.to(x.dtype)


def reference_lowbit_conv2d(x: torch.Tensor, qweight: torch.Tensor, w_scale: torch.Tensor,
                            bias: torch.Tensor | None, a_scale: torch.Tensor | None, a_bits: int,
                            weight_shape: tuple[int, int, int, int], stride: tuple[int, int],
                            padding: tuple[int, int], *, exact: bool = True) -> torch.Tensor:
    """Quantized conv2d (groups=1, dilation=1): x [B, C, H, W] -> [B, N, OH, OW] in x's dtype.

    ``weight_shape`` is the float weight's [N, C, KH, KW]; the stored codes are in the kernels' order
    [N, KH, KW, C] flattened to [N, KH*KW*C] (channels innermost, so an NHWC input row is contiguous).
    Zero padding is exact in both domains (code 0 is value 0).
    """
    n_out, c_in, kh, kw = weight_shape
    acc_dtype = torch.float64 if exact else torch.float32
    codes = conv_weight_codes(qweight, n_out, kh * kw, c_in)                 # [N, KH*KW*C]
    w = codes.view(n_out, kh, kw, c_in).permute(0, 3, 1, 2).to(acc_dtype)    # [N, C, KH, KW]
    if a_scale is None:
        y = F.conv2d(x.to(acc_dtype), w, stride=stride, padding=padding)
        y = y * w_scale.to(acc_dtype).view(1, -1, 1, 1)
    else:
        qa = quantize_act(x, a_scale, a_bits).to(acc_dtype)
        y = F.conv2d(qa, w, stride=stride, padding=padding)
        y = y * (a_scale.to(acc_dtype) * w_scale.to(acc_dtype)).view(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.to(acc_dtype).view(1, -1, 1, 1)
    return y.to(x.dtype)


def pack_conv_int4(q_rows: torch.Tensor, taps: int) -> torch.Tensor:
    """Pack conv codes [N, T*C] per tap: -> uint8 [N, T*ceil(C/2)] (halves layout inside each tap)."""
    n, k = q_rows.shape
    return pack_int4(q_rows.reshape(n * taps, k // taps)).reshape(n, -1)


def conv_weight_codes(qweight: torch.Tensor, n_out: int, taps: int, c_in: int) -> torch.Tensor:
    """int8 codes [N, T*C] of a stored conv weight (int8, or per-tap packed int4 uint8)."""
    if qweight.dtype != torch.uint8:
        return qweight.reshape(n_out, -1)
    return unpack_int4(qweight.reshape(n_out * taps, -1), c_in).reshape(n_out, taps * c_in)


def conv_weight_to_rows(weight: torch.Tensor) -> torch.Tensor:
    """Conv weight [N, C, KH, KW] -> [N, KH*KW*C] (the kernels' channels-innermost order)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
