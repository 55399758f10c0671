"""The GEGLU, LayerNorm (with and without a residual add) and bias + residual Triton kernels against
float64 references.

Marked ``gpu``: they run on CUDA, or on the CPU under ``TRITON_INTERPRET=1``
(test_geglu_layernorm_interpreter.py runs this file that way, with small shapes).

Tolerance: both kernels compute in float32 and round once to the output dtype; the float64 reference
differs by that rounding plus float32 noise: 2 units in the last place of the output dtype relative to
max|y| (as tests/kernels/test_groupnorm_kernels.py). Every element is compared.
"""

from __future__ import annotations

import pytest
import torch
from kernel_devices import assert_close_in_ulps, kernel_device, kernel_dtypes

from fewstep.kernels import geglu as gg
from fewstep.kernels import layernorm as ln
from fewstep.kernels import residual as rs

pytestmark = pytest.mark.gpu
ULP2 = {torch.float16: 2**-9, torch.bfloat16: 2**-6, torch.float32: 2**-16}






def _check(y: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    assert_close_in_ulps(y, ref, ULP2[dtype])


def test_geglu_kernel_matches_float64_reference():
    """Shapes: odd token counts, F not a multiple of the 256 tile, and SD1.5's [B, 4096, 2 x 1280] on CUDA."""
    device = kernel_device()
    shapes = [(3, 5, 2 * 300), (1, 7, 2 * 40)] + ([(8, 4096, 2 * 1280)] if device.type == "cuda" else [])
    for dtype in kernel_dtypes(device):
        for shape in shapes:
            h = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape))).mul(2).to(device, dtype)
            y = gg.geglu(h, backend="triton")
            a, g = h.double().chunk(2, dim=-1)
            ref = a * torch.nn.functional.gelu(g)
            assert y.shape == (*shape[:-1], shape[-1] // 2) and y.dtype == dtype
            _check(y, ref, dtype)


def test_geglu_rejects_odd_widths_and_strided_rows():
    device = kernel_device()
    with pytest.raises(ValueError, match="even"):
        gg.geglu(torch.randn(2, 5, device=device), backend="triton")
    with pytest.raises(ValueError, match="contiguous"):
        gg.geglu(torch.randn(6, 4, device=device).t(), backend="triton")


def test_add_layer_norm_kernel_matches_float64_reference():
    """(a + r, LN(a + r)) for SD1.5/SDXL widths (320, 1280) and a non-power-of-two small one; the sum is
    returned in the inputs' dtype exactly as ``a + r`` rounds it."""
    device = kernel_device()
    widths = [(5, 7, 24), (2, 3, 320)] + ([(8, 4096, 320), (8, 1024, 1280)] if device.type == "cuda" else [])
    for dtype in kernel_dtypes(device):
        for shape in widths:
            g = torch.Generator().manual_seed(shape[-1])
            a = torch.randn(shape, generator=g).to(device, dtype)
            r = (torch.randn(shape, generator=g) * 3 + 1).to(device, dtype)
            w, b = torch.randn(shape[-1], generator=g).to(device, dtype), torch.randn(shape[-1], generator=g).to(device, dtype)
            s, y = ln.add_layer_norm(a, r, w, b, 1e-5, backend="triton")
            assert torch.equal(s, a + r)
            ref = torch.nn.functional.layer_norm(s.double(), (shape[-1],), w.double(), b.double(), 1e-5)
            _check(y, ref, dtype)
            s2, y2 = ln.add_layer_norm(a, r, None, None, 1e-6, backend="triton")
            _check(y2, torch.nn.functional.layer_norm(s.double(), (shape[-1],), eps=1e-6), dtype)


def test_add_layer_norm_rejects_mismatched_inputs():
    device = kernel_device()
    a = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match="one shape"):
        ln.add_layer_norm(a, torch.randn(2, 9, device=device), None, None, 1e-5, backend="triton")


def test_layer_norm_kernel_matches_float64_reference():
    device = kernel_device()
    shapes = [(4, 3, 40), (2, 320)] + ([(8, 4096, 320)] if device.type == "cuda" else [])
    for dtype in kernel_dtypes(device):
        for shape in shapes:
            g = torch.Generator().manual_seed(shape[-1] + 1)
            a = (torch.randn(shape, generator=g) * 2 + 5).to(device, dtype)
            w, b = torch.randn(shape[-1], generator=g).to(device, dtype), torch.randn(shape[-1], generator=g).to(device, dtype)
            y = ln.layer_norm(a, w, b, 1e-5, backend="triton")
            _check(y, torch.nn.functional.layer_norm(a.double(), (shape[-1],), w.double(), b.double(), 1e-5), dtype)


@pytest.mark.parametrize("channels_last", [False, True])
def test_add_bias_residual_kernel_matches_reference_in_place(channels_last):
    """h <- h + r + bias[c] for NCHW and NHWC storage (the channel index differs: (o // HW) % C vs o % C),
    written into h itself; a kernel that indexed the bias with the wrong layout fails (bias varies by channel)."""
    device = kernel_device()
    shapes = [(2, 6, 5, 3)] + ([(8, 320, 64, 64)] if device.type == "cuda" else [])
    for dtype in kernel_dtypes(device):
        for shape in shapes:
            g = torch.Generator().manual_seed(shape[1])
            h, r = torch.randn(shape, generator=g).to(device, dtype), torch.randn(shape, generator=g).to(device, dtype)
            bias = (torch.arange(shape[1], dtype=torch.float32) - shape[1] / 2).to(device, dtype)
            if channels_last:
                h, r = (t.contiguous(memory_format=torch.channels_last) for t in (h, r))
            ref = h.double() + r.double() + bias.double().view(1, -1, 1, 1)
            out = rs.add_bias_residual_(h, r, bias)
            assert out.data_ptr() == h.data_ptr()
            _check(out, ref, dtype)
    h = torch.randn(1, 4, 2, 2, device=device)
    assert not rs.supported(h, h.contiguous(memory_format=torch.channels_last))
    with pytest.raises(ValueError, match="share"):
        rs.add_bias_residual_(h, torch.randn(1, 4, 2, 3, device=device), torch.zeros(4, device=device))
