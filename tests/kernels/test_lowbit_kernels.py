"""Triton low-bit kernels against the PyTorch reference (fewstep/kernels/lowbit.py vs fewstep/kernels/reference.py).

Marked ``gpu``: they run on CUDA, or on the CPU under ``TRITON_INTERPRET=1`` (see
test_lowbit_interpreter.py, which runs this file that way). Fresh random inputs per case, odd shapes.

Tolerance: with 8-bit activations both sides produce the *same integer codes* (same float32 product
x * (1/s) with one IEEE division for 1/s, same rounding rule; checked exactly below, and the fused plans
quantize inside the GEMM with the same ops) and the integer dot product is exact on both sides (int32
vs float64), so the only difference is the epilogue: float32 ``acc * s_a * s_w + bias`` vs float64, then
the cast to the output dtype. That is at most one rounding of the output dtype plus float32 noise: we
allow 2 units in the last place of the output dtype, relative to max|y| (2**-10 for fp16 and 2**-7 for
bf16). With 16-bit activations the kernel's products fp16 x int code are exact in float32 and the
float32 sum over K <= 600 adds < K * 2**-24 relative: the same bound holds. float32 inputs (the CPU
interpreter run) make inexact float32 products too, so the bound there is the summation one,
K * 2**-24 ~ 2**-14 for K <= 600, instead of an output ulp.
"""

from __future__ import annotations

import pytest
import torch
from kernel_devices import kernel_device, kernel_dtypes

from fewstep.kernels import lowbit
from fewstep.kernels import reference as ref
from fewstep.kernels.lowbit import Plan

pytestmark = pytest.mark.gpu
ULP2 = {torch.float16: 2**-10, torch.bfloat16: 2**-7, torch.float32: 2**-14}






def _close(y, y_ref, dtype):
    assert torch.isfinite(y).all()
    scale = y_ref.float().abs().max()
    err = (y.float() - y_ref.float()).abs().max()
    assert err <= ULP2[dtype] * scale, f"max error {err} > {ULP2[dtype]} * {scale}"


def test_quantize_kernel_codes_equal_reference():
    dev = kernel_device()
    for dtype in kernel_dtypes(dev, with_float32=False):
        x = (torch.randn(3, 37, 45, device=dev) * 5).to(dtype)
        scale = torch.tensor(float(x.float().abs().max()) / 127, device=dev)
        strided = x.transpose(1, 2)                                     # [3, 45, 37], non-contiguous
        for view in (x, strided):
            q = lowbit.quantize_act_triton(view, scale, 8)
            assert torch.equal(q, ref.quantize_act(view, scale, 8))


@pytest.mark.parametrize("m,k,n", [(1, 32, 16), (5, 37, 19), (70, 64, 33), (300, 200, 130)])
@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (4, 8), (8, 16), (4, 16)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("impl", ["split", "fused"])
def test_lowbit_linear_matches_reference(m, k, n, w_bits, a_bits, bias, impl):
    dev = kernel_device()
    plan = Plan(impl if a_bits == 8 else "a16", 16, 32, 64 if impl == "fused" else 128, 4, 2)
    for dtype in kernel_dtypes(dev, with_float32=False):
        x = torch.randn(2, m, k, device=dev).to(dtype)
        q, s = ref.quantize_weight(torch.randn(n, k, device=dev), w_bits)
        stored = ref.pack_int4(q) if w_bits == 4 else q
        b = torch.randn(n, device=dev).to(dtype) if bias else None
        a_scale = torch.tensor(float(x.float().abs().max()) / 127, device=dev) if a_bits == 8 else None
        y = lowbit.lowbit_linear(x, stored, s, b, a_scale, a_bits, k, backend="triton", plan=plan)
        y_ref = ref.reference_lowbit_linear(x, stored, s, b, a_scale, a_bits, k, exact=True)
        assert y.shape == (2, m, n) and y.dtype == dtype
        _close(y, y_ref, dtype)


@pytest.mark.parametrize("b,c,h,w,n,k,stride,pad", [(2, 5, 7, 6, 9, 3, 1, 1), (1, 7, 9, 8, 6, 3, 2, 1),
                                                    (2, 6, 5, 5, 4, 1, 1, 0), (1, 40, 12, 12, 24, 3, 1, 1)])
@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (4, 8), (8, 16)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("impl", ["split", "fused"])
def test_lowbit_conv_matches_reference(b, c, h, w, n, k, stride, pad, w_bits, a_bits, channels_last, impl):
    dev = kernel_device()
    plan = Plan(impl if a_bits == 8 else "a16", 16, 32, 64 if impl == "fused" else 128, 4, 2)
    for dtype in kernel_dtypes(dev, with_float32=False):
        x = torch.randn(b, c, h, w, device=dev).to(dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        q, s = ref.quantize_weight(ref.conv_weight_to_rows(torch.randn(n, c, k, k, device=dev)), w_bits)
        stored = ref.pack_conv_int4(q, k * k) if w_bits == 4 else q
        bias = torch.randn(n, device=dev).to(dtype)
        a_scale = torch.tensor(float(x.float().abs().max()) / 127, device=dev) if a_bits == 8 else None
        args = (stored, s, bias, a_scale, a_bits, (n, c, k, k), (stride, stride), (pad, pad))
        y = lowbit.lowbit_conv2d(x, *args, backend="triton", plan=plan)
        y_ref = ref.reference_lowbit_conv2d(x, *args, exact=True)
        assert y.shape == y_ref.shape and y.dtype == dtype
        _close(y, y_ref, dtype)


@pytest.mark.parametrize("bias", [True, False])
def test_int_mm_plan_matches_reference(bias):
    if not torch.cuda.is_available():
        pytest.skip("torch._int_mm (cuBLASLt) needs CUDA")
    dev = torch.device("cuda")
    m, k, n = 40, 64, 48                                            # cuBLASLt: M > 16, K and N multiples of 8
    for dtype in kernel_dtypes(dev, with_float32=False):
        x = torch.randn(m, k, device=dev).to(dtype)
        q, s = ref.quantize_weight(torch.randn(n, k, device=dev), 8)
        b = torch.randn(n, device=dev).to(dtype) if bias else None
        a_scale = torch.tensor(float(x.float().abs().max()) / 127, device=dev)
        y = lowbit.lowbit_linear(x, q, s, b, a_scale, 8, k, backend="triton", plan=Plan("int_mm"))
        _close(y, ref.reference_lowbit_linear(x, q, s, b, a_scale, 8, k, exact=True), dtype)


def test_tune_returns_the_fastest_plan_that_runs():
    dev = kernel_device()
    if dev.type != "cuda":
        pytest.skip("tune times with CUDA events")
    x = torch.randn(300, 64, device=dev, dtype=torch.float16)
    q, s = ref.quantize_weight(torch.randn(96, 64, device=dev), 8)
    a_scale = torch.tensor(float(x.float().abs().max()) / 127, device=dev)
    plans = lowbit.candidates(300, 96, 64, a8=True, w4=False, linear=True)
    assert {p.impl for p in plans} == {"split", "fused", "int_mm"}
    broken = Plan("split", 16, 64, 96, 4, 3)                       # BLOCK_K not a power of 2: cannot compile
    best, timings = lowbit.tune(lambda p: lowbit.lowbit_linear(x, q, s, None, a_scale, 8, 64, plan=p),
                                plans + [broken])
    assert timings[broken.label()] == float("inf")
    assert timings[best.label()] == min(timings.values()) < float("inf")
