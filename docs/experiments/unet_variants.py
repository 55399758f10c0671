"""Experiment (issue 8, 2026-11-30): SD1.5/SDXL UNet graph-replay ms per preparation variant (fast, fast_lean, forced SDPA
backends: cudnn_only, efficient, flash) and torch.compile of the unprepared module; run on the device as
`COMPILE=default ARCHS=sd15,sdxl BATCHES=8,1 VARIANTS=fast,fast_lean python3 docs/experiments/unet_variants.py`
(diffusers on PYTHONPATH); writes $OUT/exp8.json and profiles. Results: docs/benchmarks.md."""
import copy, json, os, sys, time, traceback
from contextlib import nullcontext
import torch
from fewstep.nodes.core import bench_sampling as B
from fewstep.nodes.core.fastpath import prepare_module
from fewstep.nodes.core.unet_lean import lean_forwards

OUT = os.environ.get("OUT", "/tmp/out")
T0 = time.time()
BUDGET = float(os.environ.get("BUDGET", "500"))
res = {}
def save():
    json.dump(res, open(f"{OUT}/exp8.json", "w"), indent=1)
def left(): return BUDGET - (time.time() - T0)

dev = "cuda"
peak = B.matmul_tflops(dev); res["peak"] = peak
arch_names = os.environ.get("ARCHS", "sd15").split(",")
for an in arch_names:
    arch = B.archs(False)[an]
    m = B.build(arch, dev, torch.float16)
    original = m.unet
    for batch in [int(b) for b in os.environ.get("BATCHES", "8,1").split(",")]:
        m.unet = original
        with torch.inference_mode():
            fl = B.flops_of(B.unet_call(m, batch))
        def attn_ctx(kind):
            if kind is None: return nullcontext()
            from torch.nn.attention import sdpa_kernel, SDPBackend
            order = {"cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION],
                     "flash": [SDPBackend.FLASH_ATTENTION], "efficient": [SDPBackend.EFFICIENT_ATTENTION],
                     "cudnn_only": [SDPBackend.CUDNN_ATTENTION]}[kind]
            try:
                return sdpa_kernel(order, set_priority=True)
            except TypeError:
                return sdpa_kernel(order)
        def attn_of(v):
            return "efficient" if v.endswith("efficient") else "cudnn_only" if v.endswith("cudnn_only") else None
        variants = [(v, "lean" in v, attn_of(v)) for v in os.environ.get("VARIANTS", "fast,fast_lean").split(",")]
        for name, lean, attn in variants:
            if left() < 60: break
            key = f"{an}_b{batch}_{name}"
            try:
                m.unet = copy.deepcopy(original)
                prepare_module(m.unet, lean_blocks=lean)
                call = B.unet_call(m, batch)
                def wrapped(call=call, attn=attn):
                    with attn_ctx(attn):
                        return call()
                ms = B.raw_graph_ms(wrapped, dev, 10 if batch == 8 else 20)
                res[key] = {"ms": round(ms, 3), "tflops": round(fl / ms / 1e9, 1), "pct": round(100 * fl / ms / 1e9 / peak, 1)}
                if name == "fast_lean" and batch == 8 and os.environ.get("PROFILE", "1") == "1":
                    from torch.profiler import profile, ProfilerActivity
                    from fewstep.kernels.groupnorm import for_graphs
                    with torch.inference_mode(), for_graphs():
                        wrapped(); torch.cuda.synchronize()
                        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
                            wrapped(); torch.cuda.synchronize()
                    res[key]["cats"] = B._by_category(prof)
                    open(f"{OUT}/prof_{key}.txt", "w").write(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=60, max_name_column_width=110))
                    open(f"{OUT}/prof_{key}_ops.txt", "w").write(prof.key_averages(group_by_input_shape=True).table(sort_by="cuda_time_total", row_limit=80, max_name_column_width=40, max_shapes_column_width=110))
            except Exception as e:
                res[key] = {"error": f"{type(e).__name__}: {e}"[:800]}
                traceback.print_exc()
            print(key, res[key], f"t={time.time()-T0:.0f}s", flush=True)
            m.unet = None; torch.cuda.empty_cache(); save()
    # torch.compile variants at b8
    for mode in [m_ for m_ in os.environ.get("COMPILE", "default").split(",") if m_ and an == "sd15"]:
        batch = 8
        key = f"{an}_b{batch}_compile_{mode}"
        if left() < (120 if mode == "default" else 240):
            res[key] = "skipped: time"; continue
        try:
            import torch._inductor.config as ic
            ic.max_autotune_conv_backends = "ATEN"
            torch._dynamo.reset()
            net = copy.deepcopy(original)
            prepare_module(net, fused_groupnorm=False, lean_blocks=False)
            m.unet = torch.compile(net, mode=mode, fullgraph=False, dynamic=False)
            call = B.unet_call(m, batch)
            t = time.time()
            with torch.inference_mode(False), torch.no_grad():
                call(); torch.cuda.synchronize()
            ct = time.time() - t
            ms = B.raw_graph_ms(call, dev, 10)
            with torch.inference_mode():
                fl = B.flops_of(B.unet_call(m, batch)) if False else fl
            res[key] = {"compile_s": round(ct, 1), "ms": round(ms, 3), "tflops": round(fl / ms / 1e9, 1), "pct": round(100 * fl / ms / 1e9 / peak, 1)}
        except Exception as e:
            res[key] = {"error": f"{type(e).__name__}: {e}"[:800]}
            traceback.print_exc()
        print(key, res[key], f"t={time.time()-T0:.0f}s", flush=True)
        m.unet = None; torch.cuda.empty_cache(); save()
    m.unet = original
    del m; torch.cuda.empty_cache()
save()
print("DONE", f"t={time.time()-T0:.0f}s")
