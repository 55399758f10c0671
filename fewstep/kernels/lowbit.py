"""Launchers of the low-bit ops, their execution plans and dispatch: Triton on CUDA, the reference elsewhere.

Public ops (all take the stored form of a quantized layer, see ``kernels.reference``):

* :func:`quantize_act_triton` — x -> int8 codes (contiguous [B, M, C] view of any strided input).
* :func:`lowbit_linear` — x [..., K] -> [..., N]; W8 or packed W4, A8 or A16, fused dequant + bias.
* :func:`lowbit_conv2d` — x [B, C, H, W] -> [B, N, OH, OW] (channels-last strides), implicit GEMM;
  a 1x1 stride-1 conv runs as a linear layer over the NHWC pixels.

A :class:`Plan` says how one call runs (GPU only): ``impl`` is

* ``"split"``  — the quantize kernel writes int8 codes, then the int8 GEMM (two launches);
* ``"fused"``  — one launch: the GEMM quantizes its fp16 A tiles in registers (``A_MODE`` 2);
* ``"int_mm"`` — quantize kernel, ``torch._int_mm`` (cuBLASLt int8 -> int32), dequant kernel (W8A8 linear
  only; cuBLASLt needs M > 16 and K, N multiples of 8);
* ``"a16"``    — weight-only (16-bit activations),

with the Triton tile sizes. :func:`candidates` lists the plans worth trying for a shape and
:func:`tune` times them (CUDA events, the way ``cudnn.benchmark`` picks a convolution algorithm) —
the quantized layers call it once per input shape, outside CUDA-graph capture.

``backend="auto"`` uses Triton when the input is on CUDA and Triton imports, else the reference;
``"triton"`` forces the kernels (on CPU only under ``TRITON_INTERPRET=1``), ``"reference"`` the reference.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fewstep.kernels import reference as ref
from fewstep.kernels import triton_modules


@dataclass(frozen=True)
class Plan:
    """How one quantized layer call runs on the GPU (see the module docstring)."""

    impl: str = "split"
    block_m: int = 128
    block_n: int = 128
    block_k: int = 128
    num_warps: int = 8
    num_stages: int = 3

    def label(self) -> str:
        if self.impl == "int_mm":
            return "int_mm"
        return f"{self.impl}:{self.block_m}x{self.block_n}x{self.block_k}w{self.num_warps}s{self.num_stages}"


IMPLS = ("split", "fused", "int_mm", "a16")


def _triton_module() -> Any | None:
    """``kernels.lowbit_triton``, or None where Triton does not import."""
    return triton_modules.load("lowbit_triton")


def triton_available(device: torch.device) -> bool:
    """True when the kernels can run on ``device`` (CUDA + Triton, or the Triton CPU interpreter)."""
    return triton_modules.runs_on("lowbit_triton", device)


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
    if x3.is_contiguous():                                  # one flat pass (the common NHWC / token case)
        block = 4096
        mod._quantize_flat_kernel[(-(-x3.numel() // block),)](x3, q, scale, x3.numel(), QMAX=ref.qmax_of(bits),
                                                              BLOCK=block, num_warps=8)
        return q
    block_m, block_c = 32, 64
    grid = ((m + block_m - 1) // block_m, (c + block_c - 1) // block_c, b)
    mod._quantize_kernel[grid](x3, q, scale, m, c, *x3.stride(), QMAX=ref.qmax_of(bits),
                               BLOCK_M=block_m, BLOCK_C=block_c)
    return q


def default_plan(m: int, a8: bool) -> Plan:
    """The plan used without tuning (and under graph capture when no tuned plan exists): tile shapes by
    the number of rows, the two-launch A8 path (the one measured on H100 last session)."""
    impl = "split" if a8 else "a16"
    block_k = 128 if a8 else 64                     # 128 bytes of K per row either way
    if m >= 256:
        return Plan(impl, 128, 128, block_k, 8, 3)
    if m >= 64:
        return Plan(impl, 64, 128, block_k, 4, 3)
    return Plan(impl, 16, 64, block_k, 4, 3)


def _tiles(m: int) -> list[tuple[int, int, int, int]]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) worth trying for ``m`` rows (Hopper: wgmma wants
    BLOCK_M >= 64 with 4 warps per 64 rows; small M is latency-bound and wants more programs). Two per
    row class, shared between classes where possible: each distinct tile is one more compile."""
    if m >= 2048:
        return [(128, 128, 8, 3), (128, 256, 8, 3)]
    if m >= 256:
        return [(64, 128, 4, 3), (128, 128, 8, 3)]
    if m >= 64:
        return [(64, 64, 4, 3), (64, 128, 4, 3)]
    return [(16, 64, 4, 3), (32, 64, 4, 3)]


def candidates(m: int, n: int, k: int, *, a8: bool, w4: bool, linear: bool) -> list[Plan]:
    """Every plan worth timing for a layer call of ``m`` rows, ``n`` outputs and ``k`` inputs."""
    if not a8:
        return [Plan("a16", bm, bn, 64, nw, ns) for bm, bn, nw, ns in _tiles(m)]
    plans = [Plan(impl, bm, bn, bk, nw, ns) for bm, bn, nw, ns in _tiles(m)
             for impl, bk in (("split", 128), ("fused", 64))]
    if linear and not w4 and m > 16 and k % 8 == 0 and n % 8 == 0:
        plans.append(Plan("int_mm"))
    return plans


def _launch(a: torch.Tensor, qweight: torch.Tensor, w_scale: torch.Tensor, a_scale: torch.Tensor | None,
            bias: torch.Tensor | None, out: torch.Tensor, m: int, n: int, c: int,
            geometry: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int], spatial: bool, plan: Plan, a_bits: int) -> None:
    mod = _triton_module()
    w4 = qweight.dtype == torch.uint8
    taps = kernel[0] * kernel[1]
    cw = qweight.shape[1] // taps
    a_mode = 0 if a_scale is None else (2 if plan.impl == "fused" else 1)
    grid = (-(-m // plan.block_m) * -(-n // plan.block_n),)
    h, w, oh, ow = geometry
    mod._lowbit_gemm_kernel[grid](
        a, qweight, w_scale, a_scale if a_scale is not None else w_scale, bias if bias is not None else w_scale,
        out, m, n, c, h, w, oh, ow, cw, qweight.stride(0),
        KH=kernel[0], KW=kernel[1], SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
        SPATIAL=spatial, W4=w4, A_MODE=a_mode, QMAX=ref.qmax_of(min(a_bits, 8)), HAS_BIAS=bias is not None,
        GROUP_M=8, BLOCK_M=plan.block_m, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k,
        num_warps=plan.num_warps, num_stages=plan.num_stages,
    )


def _int_mm_linear(a: torch.Tensor, qweight: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                   a_scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """W8A8 linear through cuBLASLt: codes a [M, K] @ codes^T [K, N] -> int32, then the dequant kernel."""
    m, n = a.shape[0], qweight.shape[0]
    acc = torch._int_mm(a, qweight.t())                                   # [M, N] int32
    out = torch.empty((m, n), dtype=dtype, device=a.device)
    grid = (-(-m // 64), -(-n // 64))
    _triton_module()._dequant_kernel[grid](acc, w_scale, a_scale, bias if bias is not None else w_scale, out,
                                           m, n, HAS_BIAS=bias is not None, BLOCK_M=64, BLOCK_N=64)
    return out


def _gemm_rows(x3: torch.Tensor, qweight: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
               a_scale: torch.Tensor | None, a_bits: int, plan: Plan) -> torch.Tensor:
    """Rows x3 [B, R, K] (any strides) -> [B*R, N] by ``plan`` (the linear-layer GEMM)."""
    b, r, k = x3.shape
    m, n = b * r, w_scale.shape[0]
    quantized_first = a_scale is not None and plan.impl in ("split", "int_mm")
    if quantized_first:
        a = quantize_act_triton(x3, a_scale, a_bits).view(m, k)          # int8, contiguous
        if plan.impl == "int_mm":
            return _int_mm_linear(a, qweight, w_scale, bias, a_scale, x3.dtype)
    else:
        a = x3.reshape(m, k) if x3.is_contiguous() else x3.contiguous().view(m, k)
    out = torch.empty((m, n), dtype=x3.dtype, device=x3.device)
    _launch(a, qweight, w_scale, a_scale, bias, out, m, n, k, (1, 1, 1, 1), (1, 1), (1, 1), (0, 0),
            spatial=False, plan=plan, a_bits=a_bits)
    return out


def lowbit_linear(x: torch.Tensor, qweight: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                  a_scale: torch.Tensor | None, a_bits: int, in_features: int, *,
                  backend: str = "auto", exact: bool = False, plan: Plan | None = None) -> torch.Tensor:
    """Quantized linear layer. x [..., K] (fp16/bf16/fp32) -> [..., N] in x's dtype.

    Args:
        qweight: int8 codes [N, K] or packed int4 uint8 [N, ceil(K/2)].
        w_scale: float32 [N]; bias: [N] or None; a_scale: float32 scalar tensor, or None for A16.
        a_bits: activation bits (<= 8) when a_scale is given.
        exact: reference path only — accumulate in float64 instead of float32.
        plan: GPU execution plan (default: :func:`default_plan`).
    """
    if x.shape[-1] != in_features:
        raise ValueError(f"lowbit_linear: input has {x.shape[-1]} features, layer expects {in_features}")
    if not _use_triton(x, backend):
        return ref.reference_lowbit_linear(x, qweight, w_scale, bias, a_scale, a_bits, in_features, exact=exact)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_features)                                       # [M, K]
    plan = plan or default_plan(x2.shape[0], a_scale is not None)
    out = _gemm_rows(x2.unsqueeze(0), qweight, w_scale, bias, a_scale, a_bits, plan)
    return out.view(*lead, out.shape[-1])


def _nhwc_rows(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C] (a view of channels-last memory, else a strided view of NCHW)."""
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(b, h * w, c)
    return x.reshape(b, c, h * w).transpose(1, 2)


def lowbit_conv2d(x: torch.Tensor, qweight: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                  a_scale: torch.Tensor | None, a_bits: int, weight_shape: tuple[int, int, int, int],
                  stride: tuple[int, int], padding: tuple[int, int], *, backend: str = "auto",
                  exact: bool = False, plan: Plan | None = None) -> torch.Tensor:
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
    m = b * oh * ow
    plan = plan or default_plan(m, a_scale is not None)
    x3 = _nhwc_rows(x)                                                    # [B, HW, C]
    if (kh, kw, *stride, *padding) == (1, 1, 1, 1, 0, 0):                 # pointwise: a GEMM over pixels
        out = _gemm_rows(x3, qweight, w_scale, bias, a_scale, a_bits, plan)
        return out.view(b, oh, ow, n_out).permute(0, 3, 1, 2)
    if a_scale is not None and plan.impl != "fused":
        a = quantize_act_triton(x3, a_scale, a_bits)                      # int8 NHWC [B, HW, C]
    else:
        a = x3.contiguous()                                               # fp16 NHWC (a copy if NCHW)
    out = torch.empty((m, n_out), dtype=x.dtype, device=x.device)        # NHWC rows
    _launch(a, qweight, w_scale, a_scale, bias, out, m, n_out, c_in, (h, w, oh, ow), (kh, kw), stride,
            padding, spatial=True, plan=plan, a_bits=a_bits)
    return out.view(b, oh, ow, n_out).permute(0, 3, 1, 2)               # [B, N, OH, OW], channels-last


def _graph_ms(fn: Callable[[], Any], reps: int) -> float:
    """ms per ``fn()`` from one CUDA-graph replay of ``reps`` back-to-back calls: GPU time alone.

    Timing eager calls with events measures the launch gaps too: a Triton launch costs ~20-40 us of
    Python, more than a batch-1 layer's kernel, so the first H200 tuning picked plans by their launch
    count (one fused launch over quantize + GEMM) and the tuned SDXL W8A8 UNet replayed *slower* as a
    graph (38.2 ms at batch 1, fp16 23.7 ms). The UNet is replayed as a graph, so plans are timed so."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()                                                    # allocator warm-up on the capture stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def time_ms(fn: Callable[[], Any], reps: int = 5, warmup: int = 2, *, graph: bool = True) -> float:
    """Time of one ``fn()`` in ms after ``warmup`` calls (which compile): on a GPU from a CUDA-graph replay
    (:func:`_graph_ms`; eager CUDA events if the call cannot be captured or ``graph`` is False), else the
    median wall time (the CPU interpreter runs of the tests)."""
    for _ in range(warmup):
        fn()
    times = []
    if not torch.cuda.is_available():
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)
    if graph:
        try:
            return _graph_ms(fn, reps)
        except Exception:  # noqa: BLE001 - not capturable: fall back to eager event timing
            torch.cuda.synchronize()
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def tune(run: Callable[[Plan], torch.Tensor], plans: list[Plan], reps: int = 5) -> tuple[Plan, dict[str, float]]:
    """The fastest of ``plans`` for ``run(plan)`` and every plan's median ms (failures, e.g. a tile that
    does not fit in shared memory, are skipped and recorded as inf)."""
    timings: dict[str, float] = {}
    best, best_ms = None, float("inf")
    for plan in plans:
        try:
            ms = time_ms(lambda p=plan: run(p), reps=reps)
        except Exception:  # noqa: BLE001 - a plan that cannot compile or launch here is not a candidate
            timings[plan.label()] = float("inf")
            continue
        timings[plan.label()] = ms
        if ms < best_ms:
            best, best_ms = plan, ms
    if best is None:
        raise RuntimeError(f"no low-bit plan ran: {list(timings)}")
    return best, timings
