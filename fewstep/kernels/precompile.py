"""Compile the low-bit kernels of a network's layers in parallel processes before tuning.

Timing a layer's candidate plans (``kernels.lowbit.tune``) first compiles every candidate, and Triton
compiles in the calling process, one kernel at a time (~1-3 s each on the H100 last session, LLVM and
ptxas); an SDXL-size W8A8 network has ~50 distinct (geometry, A mode, tile) kernels and W4A8 as many
again. Launching each distinct kernel once, on tiny tensors with the *same specialization* (dtypes,
which integer arguments are multiples of 16 or equal to 1, constexprs), in a pool of worker processes
fills Triton's on-disk cache; the tuning process then loads the binaries instead of compiling them.

The row count M and the image size H, W, OH, OW are not specialised (``do_not_specialize``), so a
worker runs every kernel with one image of 4x4 pixels or 4 rows.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
from dataclasses import asdict, dataclass

import torch

from fewstep.kernels import lowbit
from fewstep.kernels.lowbit import Plan


@dataclass(frozen=True)
class KernelSpec:
    """One layer kind: what decides a compiled kernel, apart from the plan."""

    kind: str                       # "linear" | "conv"
    n: int                          # output features / channels
    c: int                          # input features / channels
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    w4: bool = False
    a8: bool = True
    bias: bool = True
    dtype: str = "float16"


def spec_class(spec: KernelSpec) -> tuple:
    """What Triton's specialization sees of the sizes: multiple of 16, equal to 1 (values fold otherwise)."""
    def cls(v: int) -> tuple[bool, bool]:
        return v % 16 == 0, v == 1
    cw = (spec.c + 1) // 2 if spec.w4 else spec.c
    taps = spec.kernel[0] * spec.kernel[1]
    return (spec.kind, spec.kernel, spec.stride, spec.padding, spec.w4, spec.a8, spec.bias, spec.dtype,
            cls(spec.n), cls(spec.c), cls(cw), cls(cw * taps))


def distinct(specs: list[KernelSpec]) -> list[KernelSpec]:
    """One representative spec per specialization class."""
    seen: dict[tuple, KernelSpec] = {}
    for spec in specs:
        seen.setdefault(spec_class(spec), spec)
    return list(seen.values())


def _run_one(spec: KernelSpec, plan: Plan) -> None:
    """Launch ``plan`` once for ``spec`` on tiny CUDA tensors (compiles it into the on-disk cache)."""
    from fewstep.kernels import reference as ref

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")     # cpu: TRITON_INTERPRET=1 runs
    dtype = getattr(torch, spec.dtype)
    bits = 4 if spec.w4 else 8
    a_scale = torch.tensor(0.01, device=dev) if spec.a8 else None
    bias = torch.zeros(spec.n, device=dev, dtype=dtype) if spec.bias else None
    if spec.kind == "linear":
        q, s = ref.quantize_weight(torch.randn(spec.n, spec.c, device=dev), bits)
        stored = ref.pack_int4(q) if spec.w4 else q
        lowbit.lowbit_linear(torch.randn(4, spec.c, device=dev, dtype=dtype), stored, s, bias, a_scale, 8,
                             spec.c, backend="triton", plan=plan)
        return
    kh, kw = spec.kernel
    q, s = ref.quantize_weight(torch.randn(spec.n, kh * kw * spec.c, device=dev), bits)
    stored = ref.pack_conv_int4(q, kh * kw) if spec.w4 else q
    x = torch.randn(1, spec.c, 4, 4, device=dev, dtype=dtype).to(memory_format=torch.channels_last)
    lowbit.lowbit_conv2d(x, stored, s, bias, a_scale, 8, (spec.n, spec.c, kh, kw), spec.stride, spec.padding,
                         backend="triton", plan=plan)


def _worker(jobs: list[tuple[dict, dict]]) -> tuple[int, int]:
    ok = failed = 0
    for spec, plan in jobs:
        try:
            _run_one(KernelSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}),
                     Plan(**plan))
            ok += 1
        except Exception:  # noqa: BLE001 - a plan that cannot compile here is skipped by tune() later too
            failed += 1
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return ok, failed


def warm(jobs: list[tuple[KernelSpec, Plan]], workers: int = 8) -> dict[str, float]:
    """Compile ``jobs`` in ``workers`` spawned processes; returns counts and the wall time."""
    t0 = time.perf_counter()
    unique = sorted({(s, p) for s, p in jobs}, key=repr)
    chunks = [[(asdict(s), asdict(p)) for s, p in unique[i::workers]] for i in range(workers)]
    ok = failed = 0
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for got_ok, got_failed in pool.map(_worker, [c for c in chunks if c]):
            ok, failed = ok + got_ok, failed + got_failed
    return {"kernels": len(unique), "compiled": ok, "failed": failed, "seconds": time.perf_counter() - t0}


def network_specs(module: torch.nn.Module, dtype: torch.dtype = torch.float16) -> list[KernelSpec]:
    """The distinct kernel specs of a quantized network's layers (``nodes.mixdq.layers`` storage)."""
    specs = []
    for layer in module.modules():
        qweight = getattr(layer, "qweight", None)
        if not isinstance(qweight, torch.Tensor) or not hasattr(layer, "w_scale"):
            continue
        common = dict(w4=qweight.dtype == torch.uint8, a8=layer.a_scale is not None, bias=layer.bias is not None,
                      dtype=str(dtype).removeprefix("torch."))
        if hasattr(layer, "weight_shape"):
            n, c, kh, kw = layer.weight_shape
            specs.append(KernelSpec("conv", n, c, (kh, kw), tuple(layer.stride), tuple(layer.padding), **common))
        else:
            specs.append(KernelSpec("linear", layer.out_features, layer.in_features, **common))
    return distinct(specs)


def jobs_for(specs: list[KernelSpec], rows: list[int], *, tuned: bool = True) -> list[tuple[KernelSpec, Plan]]:
    """(spec, plan) for the default plan and, when ``tuned``, every candidate plan of every spec at each
    row count in ``rows`` (batch sizes times the pixel counts of the resolution levels: the tile lists
    differ by row class)."""
    jobs = []
    for spec in specs:
        pointwise = spec.kind == "linear" or (spec.kernel == (1, 1) and spec.stride == (1, 1) and spec.padding == (0, 0))
        for m in rows:
            plans = [lowbit.default_plan(m, spec.a8)]
            if tuned:
                plans += lowbit.candidates(m, spec.n, spec.c, a8=spec.a8, w4=spec.w4, linear=pointwise)
            jobs += [(spec, plan) for plan in plans if plan.impl != "int_mm"]
    return jobs
