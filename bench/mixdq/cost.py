"""Cost of MixDQ W8A8 / W4A8 against fp16 on SD1.5- and SDXL-size UNets (random weights; speed and memory
do not depend on weight values): weight memory, peak memory of one UNet call, UNet latency (eager and
CUDA-graph replay), at several batch sizes, all in one process on one GPU; plus where the time goes
(profiler kernel time by category) and, per distinct layer shape, the low-bit kernel against the fp16
cuBLAS / cuDNN layer.

Variants: ``fp16`` (diffusers as built: NCHW), ``fp16 fast`` (``nodes.core.fastpath.prepare_module``:
SDPA attention, channels-last convolutions, cuDNN autotuning — the sampling fast path's setup), ``W8A8
default`` (every quantized layer on the default two-launch plan: quantize kernel + int8 GEMM, last
session's kernels), ``W8A8`` (per-layer plans picked by timing, see ``kernels.lowbit.tune``) and ``W4A8``
(default plans: its speed is not a goal, and tuning it would double the kernels to compile).
Every variant's latency is taken eagerly and as a CUDA-graph replay of one UNet call; the fair speed
comparison is graph against graph (the fast path replays graphs), against the faster fp16 variant.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fewstep.nodes.mixdq.calibrate import calibrate
from fewstep.nodes.mixdq.layers import (
    FP_BITS,
    is_bos_layer,
    plan_report,
    quantizable_layers,
    set_tuning,
    weight_bytes,
)
from fewstep.nodes.mixdq.quantize import quantize_network

# diffusers UNet2DConditionModel configs of the two architectures (public model configs, written out).
SD15 = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
SDXL = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
TINY = dict(  # a smoke-test size: every code path of SD1.5, seconds to build and compile
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 128),
    cross_attention_dim=96, attention_head_dim=8, norm_num_groups=16,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)
ARCHS = {"sd15": (SD15, 64, 768), "sdxl": (SDXL, 128, 2048), "tiny": (TINY, 16, 96)}


def build(arch: str, device: torch.device) -> nn.Module:
    """A random-weight fp16 UNet of ``arch`` built directly on ``device``."""
    from diffusers import UNet2DConditionModel

    config = ARCHS[arch][0]
    with torch.device(device):
        torch.manual_seed(0)
        net = UNet2DConditionModel(**config)
    return net.to(torch.float16).eval().requires_grad_(False)


def inputs(arch: str, batch: int, device: torch.device, channels_last: bool = False) -> tuple[tuple, dict]:
    """(args, kwargs) of one UNet call; text token 0 is one shared row, as CLIP's BOS is."""
    _, res, dim = ARCHS[arch]
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(batch, 4, res, res, generator=g).to(device, torch.float16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ehs = torch.randn(batch, 77, dim, generator=g).to(device, torch.float16)
    ehs[:, 0] = ehs[0, 0] * 10                                    # the BOS outlier row, same for all
    kwargs: dict[str, Any] = {"encoder_hidden_states": ehs}
    if arch == "sdxl":
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, 1280, generator=g).to(device, torch.float16),
                                       "time_ids": torch.tensor([[1024, 1024, 0, 0, 1024, 1024]] * batch,
                                                                device=device, dtype=torch.float16)}
    t = torch.full((batch,), 500.0, device=device)
    return (x, t), kwargs


def cost_config(net: nn.Module, arch: str, w_bits: int, a_bits: int, device: torch.device) -> dict:
    """Uniform W{w}A{a} with BOS-aware K/V and calibrated ranges (speed does not depend on which layers
    a mixed allocation picks, only on how many bytes and which kernels run)."""
    args, kwargs = inputs(arch, 1, device)
    calib = calibrate(net, lambda n: n(*args, **kwargs).sample, keep_calls=False)
    names = list(quantizable_layers(net))
    bos = calib.bos_embedding()
    return {"weight_bits": {n: w_bits for n in names}, "act_bits": {n: a_bits for n in names},
            "act_absmax": {n: calib.absmax_no_bos.get(n, calib.absmax[n]) if is_bos_layer(n) else calib.absmax[n]
                           for n in names},
            "bos_aware": True, "bos_embedding": None if bos is None else bos.tolist(),
            "keep_fp": [n for n in names if a_bits >= FP_BITS]}


def _time_ms(fn: Callable[[], Any], iters: int) -> float:
    """Median milliseconds of ``fn()`` over ``iters`` CUDA-event-timed runs (after 3 warm-ups)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _graph_ms(net: nn.Module, args: tuple, kwargs: dict, iters: int) -> float:
    """Median ms of a CUDA-graph replay of one UNet call (static inputs)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            net(*args, **kwargs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        net(*args, **kwargs)
    ms = _time_ms(graph.replay, iters)
    del graph
    return ms


CATEGORIES = (  # (category, substrings of a CUDA kernel name), first match wins
    ("lowbit GEMM (Triton)", ("_lowbit_gemm_kernel",)),
    ("act quantize (Triton)", ("_quantize_kernel", "_quantize_flat_kernel")),
    ("int_mm dequant (Triton)", ("_dequant_kernel",)),
    ("attention", ("flash", "fmha", "attention", "softmax")),
    ("norm", ("norm",)),
    ("conv (cuDNN)", ("conv", "implicit", "xmma_fprop", "sm90_xmma", "nhwc", "fprop")),
    ("GEMM (cuBLAS)", ("gemm", "cutlass", "sm90", "cublas", "ampere", "s16816", "igemm")),
    ("copy / layout", ("copy", "cat", "transpose", "contiguous")),
)


def _category(name: str) -> str:
    low = name.lower()
    for label, keys in CATEGORIES:
        if any(k in low for k in keys):
            return label
    return "elementwise / other"


@torch.no_grad()
def profile_call(net: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """CUDA kernel time of one eager UNet call by category (ms), kernel count, and the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    net(*args, **kwargs)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        net(*args, **kwargs)
        torch.cuda.synchronize()
    by_cat: dict[str, float] = defaultdict(float)
    by_name: dict[str, float] = defaultdict(float)
    count = 0
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            us = evt.time_range.elapsed_us()                     # a kernel event's own span on the GPU
            by_cat[_category(evt.name)] += us / 1000
            by_name[evt.name[:80]] += us / 1000
            count += 1
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    return {"kernels": count, "total_ms": sum(by_cat.values()),
            "by_category_ms": dict(sorted(by_cat.items(), key=lambda kv: -kv[1])), "top_kernels_ms": dict(top)}


@torch.no_grad()
def measure(net: nn.Module, arch: str, batch: int, device: torch.device, iters: int,
            channels_last: bool) -> dict[str, float]:
    """Weight MB, peak MB of one call (weights + activations), eager and graph latency. The first call
    picks the quantized layers' plans (tuning) and is timed separately."""
    args, kwargs = inputs(arch, batch, device, channels_last)
    t0 = time.perf_counter()
    net(*args, **kwargs)                                          # compile / tune / warm up
    torch.cuda.synchronize()
    first_s = time.perf_counter() - t0
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    net(*args, **kwargs)
    torch.cuda.synchronize()
    act_peak = torch.cuda.max_memory_allocated() - base
    wbytes = weight_bytes(net)
    eager = _time_ms(lambda: net(*args, **kwargs), iters)
    graph = _graph_ms(net, args, kwargs, iters)
    return {"weight_mb": wbytes / 2**20, "peak_mb": (wbytes + act_peak) / 2**20, "eager_ms": eager,
            "graph_ms": graph, "first_call_s": first_s}


def check_outputs(fp: nn.Module, quant: nn.Module, arch: str, device: torch.device) -> float:
    """SQNR (dB) of the quantized UNet's output against fp16 on the benchmark input (sanity: not garbage)."""
    from fewstep.nodes.mixdq.sensitivity import sqnr_db

    args, kwargs = inputs(arch, 1, device)
    with torch.no_grad():
        return sqnr_db(fp(*args, **kwargs).sample.float(), quant(*args, **kwargs).sample.float())


def shape_table(net: nn.Module) -> list[dict]:
    """Distinct tuned layer shapes of ``net``: chosen plan vs the fp16 layer (ms, speed-up), with counts."""
    merged: dict[tuple, dict] = {}
    for row in plan_report(net):
        key = (row["kind"], row["rows"], row["n"], row["k"], row["w_bits"], row["a_bits"])
        if key in merged:
            merged[key]["layers"] += 1
            continue
        speed = (row["fp16_ms"] / row["ms"]) if row["ms"] and row["fp16_ms"] else None
        merged[key] = {**{k: v for k, v in row.items() if k != "layer"}, "layers": 1, "speedup_vs_fp16": speed}
    return sorted(merged.values(), key=lambda r: -(r["fp16_ms"] or 0) * r["layers"])


TUNED = ("W8A8",)          # variants whose layers pick plans by timing; the others run the default plans


def _prepare(net: nn.Module, log) -> None:
    """The sampling fast path's one-time setup (``nodes.core.fastpath.prepare_module``: lean SDPA
    attention, channels-last weights and activations, fused GroupNorm+SiLU where that version has them),
    the same for fp16 and quantized networks; a quantized network has no nn.Conv2d left, so the NHWC
    hand-off of the transformer blocks is applied explicitly. A failure of that (concurrently developed)
    module falls back to channels-last weights alone, and says so."""
    from fewstep.nodes.core import fastpath

    try:
        fastpath.prepare_module(net)
        keep = getattr(fastpath, "keep_channels_last", None)
        if keep is not None:
            keep(net)
    except Exception as exc:  # noqa: BLE001 - the bench must still run; the log records what was measured
        log(f"prepare_module failed ({type(exc).__name__}: {exc}); channels-last weights only")
        net.to(memory_format=torch.channels_last)


def _variants(fp: nn.Module, arch: str, device: torch.device, names: list[str], log) -> list[tuple[str, nn.Module, bool]]:
    """(name, network, channels-last input) of every requested variant, built from the fp16 network
    (no quantized call yet: the kernels are precompiled first)."""
    out: list[tuple[str, nn.Module, bool]] = []
    if "fp16" in names:
        out.append(("fp16", fp, False))
    if "fp16 fast" in names:
        fast = copy.deepcopy(fp)
        _prepare(fast, log)
        out.append(("fp16 fast", fast, True))
    for name, (w, a) in {"W8A8 default": (8, 8), "W8A8": (8, 8), "W4A8": (4, 8)}.items():
        if name in names:
            q = quantize_network(fp, cost_config(fp, arch, w, a, device))
            _prepare(q, log)
            out.append((name, q, True))
    return out


def _precompile(variants: list[tuple[str, nn.Module, bool]], workers: int, log, done: set) -> dict | None:
    """Fill Triton's cache for every variant's kernels (default plans; all candidates of tuned ones);
    ``done`` holds the (spec, plan) pairs warmed earlier in this process (SDXL after SD1.5)."""
    from fewstep.kernels.precompile import distinct, jobs_for, network_specs, spec_class, warm

    rows = [4096, 512, 128, 32]                                   # one per row class of kernels.lowbit._tiles
    jobs = []
    for name, net, _ in variants:
        if not name.startswith("fp16"):
            jobs += jobs_for(distinct(network_specs(net)), rows, tuned=name in TUNED)
    jobs = [(s, p) for s, p in jobs if (spec_class(s), p) not in done]
    done.update((spec_class(s), p) for s, p in jobs)
    if not jobs or workers <= 0:
        return None
    stats = warm(jobs, workers)
    log(f"precompiled {stats}")
    return stats


def _measure_all(arch: str, built: list, batches: list[int], iters: int, device: torch.device,
                 profile_batches: tuple[int, ...], log, out: dict, save: Callable[[dict], None],
                 deadline: float) -> None:
    rows, profiles = out["rows"], out["profiles"]
    for batch in batches:
        for name, net, cl in built:
            if time.perf_counter() > deadline:
                out["skipped"].append(f"{arch} {name} b={batch}")
                log(f"{arch} {name} b={batch}: skipped (time budget)")
                continue
            row = {"arch": arch, "variant": name, "batch": batch, **measure(net, arch, batch, device, iters, cl)}
            rows.append(row)
            if name in TUNED:
                out["shapes"][f"{arch} {name}"] = shape_table(net)
            save(out)
            log(f"{arch:5s} {name:12s} b={batch}: weights {row['weight_mb']:8.1f} MB  peak {row['peak_mb']:8.1f} MB"
                f"  eager {row['eager_ms']:7.2f} ms  graph {row['graph_ms']:7.2f} ms  first {row['first_call_s']:.1f} s")
            if batch in profile_batches and name in ("fp16", "fp16 fast", "W8A8"):
                args, kwargs = inputs(arch, batch, device, cl)
                profiles.append({"arch": arch, "variant": name, "batch": batch, **profile_call(net, args, kwargs)})
                log(f"  profile {name} b={batch}: {profiles[-1]['kernels']} kernels, "
                    f"{ {k: round(v, 2) for k, v in profiles[-1]['by_category_ms'].items()} }")
                save(out)


def run_cost(archs: list[str], batches: list[int], iters: int, log=lambda s: None,
             variants: list[str] | None = None, workers: int = 12, profile_batches: tuple[int, ...] = (1, 8),
             save: Callable[[dict], None] = lambda out: None, budget_s: float = float("inf")) -> dict[str, Any]:
    """Every (arch, variant, batch) row, the profiles and the per-shape kernel table, in one process.

    ``save(out)`` is called after every row and profile (the caller writes the partial JSON: a call cut
    short by a time limit keeps what it measured); rows that would start after ``budget_s`` seconds
    are skipped and listed in ``out["skipped"]``."""
    device = torch.device("cuda")
    deadline = time.perf_counter() + budget_s
    names = variants or ["fp16", "fp16 fast", "W8A8 default", "W8A8", "W4A8"]
    out: dict[str, Any] = {"rows": [], "profiles": [], "shapes": {}, "precompile": {}, "sqnr_db": {}, "skipped": []}
    warmed: set = set()
    with torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=True):
        for arch in archs:
            t0 = time.perf_counter()
            if t0 > deadline:
                out["skipped"].append(arch)
                log(f"[{arch}] skipped (time budget)")
                continue
            fp = build(arch, device)
            built = _variants(fp, arch, device, names, log)
            log(f"[{arch}] built {len(built)} variants in {time.perf_counter() - t0:.0f} s")
            out["precompile"][arch] = _precompile(built, workers, log, warmed)
            for name, net, _ in built:
                if not name.startswith("fp16"):
                    out["sqnr_db"][f"{arch} {name}"] = db = check_outputs(fp, net, arch, device)
                    log(f"[{arch}] {name}: output SQNR vs fp16 = {db:.1f} dB")
                if name in TUNED:
                    set_tuning(net, True)
            _measure_all(arch, built, batches, iters, device, profile_batches, log, out, save, deadline)
            for name, net, _ in built:
                if name in TUNED:
                    out["shapes"][f"{arch} {name}"] = shape_table(net)
            save(out)
            del built, fp
            torch.cuda.empty_cache()
    return out
