"""The Triton GroupNorm(+SiLU) kernels (fewstep/kernels/groupnorm_triton.py) against the float64 reference.

Marked ``gpu``: they run on CUDA, or on the CPU under ``TRITON_INTERPRET=1`` (test_groupnorm_interpreter.py
runs this file that way, with small shapes). Fresh random inputs per case with a non-zero mean (the
statistics must not cancel), odd pixel counts and channel counts that are not powers of two.

Tolerance: the kernel computes in float32 and rounds once to the output dtype, as the reference
(float32 F.group_norm) does, so outputs may differ by one rounding of the output dtype plus float32
statistics noise: 2 units in the last place of the output dtype relative to max|y| (2 x 2**-7 for
bf16, 2 x 2**-10 for fp16; 2**-16 for float32 inputs, whose float32 statistics differ from the float64
ones by far less than that at these sizes). Every element is compared, so an unwritten one fails.
"""

from __future__ import annotations

import pytest
import torch
from kernel_devices import assert_close_in_ulps, kernel_device, kernel_dtypes

from fewstep.kernels import groupnorm as gn

pytestmark = pytest.mark.gpu
ULP2 = {torch.float16: 2**-9, torch.bfloat16: 2**-6, torch.float32: 2**-16}






def _shapes(device: torch.device) -> list[tuple[int, int, int, int, int]]:
    """(N, C, H, W, groups): the VAE / UNet cases on CUDA; small odd ones under the interpreter."""
    small = [(2, 12, 5, 7, 4), (1, 20, 9, 3, 5), (3, 8, 1, 33, 8)]
    if device.type != "cuda":
        return small
    return small + [(1, 128, 512, 512, 32), (2, 320, 64, 64, 32), (1, 2560, 16, 16, 32), (8, 640, 32, 32, 32)]


def _cases(device: torch.device) -> list[tuple[torch.dtype, tuple[int, int, int, int, int]]]:
    """Every dtype on the small shapes; the half-precision dtypes on the model-sized ones."""
    small = [(dt, shape) for dt in kernel_dtypes(device) for shape in _shapes(device)[:3]]
    return small + [(dt, shape) for dt in kernel_dtypes(device)[:2] for shape in _shapes(device)[3:]]


def _check(y: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    assert_close_in_ulps(y, ref, ULP2[dtype])


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_kernel_matches_float64_reference(silu, channels_last):
    device = kernel_device()
    for dtype, (n, c, h, w, groups) in _cases(device):
        g = torch.Generator().manual_seed(n * 1000 + c + h)
        x = (torch.randn(n, c, h, w, generator=g) * 2.0 + 3.0).to(device, dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        weight = torch.randn(c, generator=g).to(device, dtype)
        bias = torch.randn(c, generator=g).to(device, dtype)
        y = gn.group_norm(x, groups, weight, bias, 1e-5, silu=silu, backend="triton")
        ref = torch.nn.functional.group_norm(x.double(), groups, weight.double(), bias.double(), 1e-5)
        ref = torch.nn.functional.silu(ref) if silu else ref
        assert y.dtype == dtype and y.stride() == x.stride()
        _check(y, ref, dtype)


@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_kernel_adds_the_per_channel_pre_vector_first(channels_last):
    """``pre`` [N, C] (a ResnetBlock2D's time embedding) is added before the statistics and the affine:
    the kernel equals GroupNorm(x + pre) + SiLU in float64, and differs from GroupNorm(x) (so a kernel
    that ignored ``pre`` would fail: with per-channel shifts the group statistics change)."""
    device = kernel_device()
    for dtype, (n, c, h, w, groups) in _cases(device):
        g = torch.Generator().manual_seed(7 * n + c + w)
        x = (torch.randn(n, c, h, w, generator=g) + 1.0).to(device, dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        pre = (torch.randn(n, c, generator=g) * 3.0).to(device, dtype)
        weight = torch.randn(c, generator=g).to(device, dtype)
        bias = torch.randn(c, generator=g).to(device, dtype)
        y = gn.group_norm(x, groups, weight, bias, 1e-5, silu=True, backend="triton", pre=pre)
        shifted = x.double() + pre.double()[:, :, None, None]
        ref = torch.nn.functional.silu(torch.nn.functional.group_norm(shifted, groups, weight.double(),
                                                                      bias.double(), 1e-5))
        assert y.stride() == x.stride()
        _check(y, ref, dtype)
        if c // groups > 1:              # with one channel per group a per-channel shift cancels out
            without = gn.group_norm(x, groups, weight, bias, 1e-5, silu=True, backend="triton")
            assert float((without.double() - ref).abs().max()) > 0.05
    x = torch.randn(2, 6, 4, 4, device=device)
    with pytest.raises(ValueError, match="N x C"):
        gn.group_norm(x, 3, None, None, 1e-5, backend="triton", pre=torch.zeros(2, 5, device=device))


def test_group_norm_kernel_without_affine_and_3d_input():
    device = kernel_device()
    x = torch.randn(2, 6, 37, generator=torch.Generator().manual_seed(5)).to(device) - 4.0
    y = gn.group_norm(x, 3, None, None, 1e-6, backend="triton")
    ref = torch.nn.functional.group_norm(x.double(), 3, None, None, 1e-6)
    _check(y, ref, torch.float32)
    tokens = x.transpose(1, 2).contiguous().transpose(1, 2)     # [N, C, P] view of [N, P, C] (VAE attention)
    y = gn.group_norm(tokens, 3, None, None, 1e-6, backend="triton")
    assert y.stride() == tokens.stride()
    _check(y, ref, torch.float32)



def test_auto_backend_uses_the_kernels_in_graphs_and_on_large_tensors(monkeypatch):
    """Small eager calls keep PyTorch's GroupNorm (three Python launches cost more than they save);
    inside ``for_graphs`` (warm-up and capture of a CUDA graph) and from EAGER_MIN_NUMEL the kernels run."""
    if not torch.cuda.is_available():
        pytest.skip("the auto backend picks the kernels on CUDA only")
    calls = []
    real = gn.group_norm_triton
    monkeypatch.setattr(gn, "group_norm_triton", lambda *a, **k: calls.append(a[0].numel()) or real(*a, **k))
    small = torch.randn(1, 32, 16, 16, device="cuda", dtype=torch.float16)
    w, b = torch.ones(32, device="cuda", dtype=torch.float16), torch.zeros(32, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        eager = gn.group_norm(small, 8, w, b, 1e-5, silu=True)
        assert calls == [] and torch.equal(eager, torch.nn.functional.silu(
            torch.nn.functional.group_norm(small, 8, w, b, 1e-5)))
        with gn.for_graphs():
            gn.group_norm(small, 8, w, b, 1e-5, silu=True)
        assert calls == [small.numel()]
        big = torch.randn(1, 32, 512, 256, device="cuda", dtype=torch.float16)
        gn.group_norm(big, 8, w, b, 1e-5)
        assert calls[-1] == big.numel() >= gn.EAGER_MIN_NUMEL
        small.requires_grad_(True)
    with gn.for_graphs():
        gn.group_norm(small, 8, w, b, 1e-5)                       # autograd: the reference path
    assert len(calls) == 2
