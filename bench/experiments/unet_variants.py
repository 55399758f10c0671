# ruff: noqa: E401, E701, E702, E731, T201, B023  -- a one-off GPU experiment kept as it ran (results: docs/benchmarks.md)
"""Experiment (issue 8, 2026-11-30): SD1.5/SDXL UNet graph-replay ms per preparation variant (fast, fast_lean, forced SDPA
backends: cudnn_only, efficient, flash) and torch.compile of the unprepared module; run on the device as
`COMPILE=default ARCHS=sd15,sdxl BATCHES=8,1 VARIANTS=fast,fast_lean python3 bench/experiments/unet_variants.py`
(diffusers on PYTHONPATH); writes $OUT/exp8.json and profiles. Results: docs/benchmarks.md."""
import copy
import json
import os
import time
import traceback
from contextlib import nullcontext

import torch

from fewstep.bench.core import sampling as B
from fewstep.nodes.core.fastpath import prepare_module


class Run:
    """The experiment's output folder, clock, time budget and results (written after every row)."""

    def __init__(self) -> None:
        self.out = os.environ.get("OUT", "/tmp/out")
        self.t0 = time.time()
        self.budget = float(os.environ.get("BUDGET", "500"))
        self.res: dict = {}

    def save(self) -> None:
        json.dump(self.res, open(f"{self.out}/exp8.json", "w"), indent=1)

    def left(self) -> float:
        return self.budget - (time.time() - self.t0)

    def report(self, key: str) -> None:
        print(key, self.res[key], f"t={time.time() - self.t0:.0f}s", flush=True)


def attn_ctx(kind):
    if kind is None:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    order = {"cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION],
             "flash": [SDPBackend.FLASH_ATTENTION], "efficient": [SDPBackend.EFFICIENT_ATTENTION],
             "cudnn_only": [SDPBackend.CUDNN_ATTENTION]}[kind]
    try:
        return sdpa_kernel(order, set_priority=True)
    except TypeError:
        return sdpa_kernel(order)


def attn_of(v):
    return "efficient" if v.endswith("efficient") else "cudnn_only" if v.endswith("cudnn_only") else None


def profile_row(run, key, wrapped):
    from torch.profiler import ProfilerActivity, profile

    from fewstep.kernels.groupnorm import for_graphs
    with torch.inference_mode(), for_graphs():
        wrapped(); torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
            wrapped(); torch.cuda.synchronize()
    run.res[key]["cats"] = B._by_category(prof)
    open(f"{run.out}/prof_{key}.txt", "w").write(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=60, max_name_column_width=110))
    open(f"{run.out}/prof_{key}_ops.txt", "w").write(prof.key_averages(group_by_input_shape=True).table(sort_by="cuda_time_total", row_limit=80, max_name_column_width=40, max_shapes_column_width=110))


def variant_row(run, m, original, key, batch, lean, attn, fl, peak, dev):
    m.unet = copy.deepcopy(original)
    prepare_module(m.unet, lean_blocks=lean)
    call = B.unet_call(m, batch)

    def wrapped(call=call, attn=attn):
        with attn_ctx(attn):
            return call()
    ms = B.raw_graph_ms(wrapped, dev, 10 if batch == 8 else 20)
    run.res[key] = {"ms": round(ms, 3), "tflops": round(fl / ms / 1e9, 1), "pct": round(100 * fl / ms / 1e9 / peak, 1)}
    if key.endswith("_b8_fast_lean") and os.environ.get("PROFILE", "1") == "1":
        profile_row(run, key, wrapped)


def prepared_variants(run, an, m, original, peak, dev):
    """Graph-replay ms of each preparation variant per batch; returns the last batch's FLOPs (as the script did)."""
    fl = None
    for batch in [int(b) for b in os.environ.get("BATCHES", "8,1").split(",")]:
        m.unet = original
        with torch.inference_mode():
            fl = B.flops_of(B.unet_call(m, batch))
        variants = [(v, "lean" in v, attn_of(v)) for v in os.environ.get("VARIANTS", "fast,fast_lean").split(",")]
        for name, lean, attn in variants:
            if run.left() < 60:
                break
            key = f"{an}_b{batch}_{name}"
            try:
                variant_row(run, m, original, key, batch, lean, attn, fl, peak, dev)
            except Exception as e:
                run.res[key] = {"error": f"{type(e).__name__}: {e}"[:800]}
                traceback.print_exc()
            run.report(key)
            m.unet = None; torch.cuda.empty_cache(); run.save()
    return fl


def compile_row(run, m, original, key, mode, fl, peak, dev):
    import torch._inductor.config as ic
    ic.max_autotune_conv_backends = "ATEN"
    torch._dynamo.reset()
    net = copy.deepcopy(original)
    prepare_module(net, fused_groupnorm=False, lean_blocks=False)
    m.unet = torch.compile(net, mode=mode, fullgraph=False, dynamic=False)
    call = B.unet_call(m, 8)
    t = time.time()
    with torch.inference_mode(False), torch.no_grad():
        call(); torch.cuda.synchronize()
    ct = time.time() - t
    ms = B.raw_graph_ms(call, dev, 10)
    run.res[key] = {"compile_s": round(ct, 1), "ms": round(ms, 3), "tflops": round(fl / ms / 1e9, 1), "pct": round(100 * fl / ms / 1e9 / peak, 1)}


def compile_variants(run, an, m, original, fl, peak, dev):
    """torch.compile of the unprepared module at batch 8 (SD1.5 only)."""
    for mode in [m_ for m_ in os.environ.get("COMPILE", "default").split(",") if m_ and an == "sd15"]:
        key = f"{an}_b8_compile_{mode}"
        if run.left() < (120 if mode == "default" else 240):
            run.res[key] = "skipped: time"
            continue
        try:
            compile_row(run, m, original, key, mode, fl, peak, dev)
        except Exception as e:
            run.res[key] = {"error": f"{type(e).__name__}: {e}"[:800]}
            traceback.print_exc()
        run.report(key)
        m.unet = None; torch.cuda.empty_cache(); run.save()


def main() -> None:
    run = Run()
    dev = "cuda"
    peak = B.matmul_tflops(dev); run.res["peak"] = peak
    for an in os.environ.get("ARCHS", "sd15").split(","):
        m = B.build(B.archs(False)[an], dev, torch.float16)
        original = m.unet
        fl = prepared_variants(run, an, m, original, peak, dev)
        compile_variants(run, an, m, original, fl, peak, dev)
        m.unet = original
        del m; torch.cuda.empty_cache()
    run.save()
    print("DONE", f"t={time.time() - run.t0:.0f}s")


if __name__ == "__main__":
    main()
