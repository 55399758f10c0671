"""Cost of MixDQ W8A8 / W4A8 against fp16 on SD1.5- and SDXL-size UNets (random weights; speed and memory
do not depend on weight values): weight memory, peak memory of one UNet call, UNet latency (eager and
CUDA-graph replay), at several batch sizes, all in one process on one GPU.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from torch import nn

from nodes.mixdq.calibrate import calibrate
from nodes.mixdq.layers import FP_BITS, is_bos_layer, quantizable_layers, weight_bytes
from nodes.mixdq.quantize import quantize_network

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


def inputs(arch: str, batch: int, device: torch.device) -> tuple[tuple, dict]:
    """(args, kwargs) of one UNet call; text token 0 is one shared row, as CLIP's BOS is."""
    _, res, dim = ARCHS[arch]
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(batch, 4, res, res, generator=g).to(device, torch.float16)
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


def _time_ms(fn, iters: int) -> float:
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


@torch.no_grad()
def measure(net: nn.Module, arch: str, batch: int, device: torch.device, iters: int) -> dict[str, float]:
    """Weight MB, peak MB of one call (weights + activations), eager and graph latency."""
    args, kwargs = inputs(arch, batch, device)
    net(*args, **kwargs)                                          # compile / warm up
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    net(*args, **kwargs)
    torch.cuda.synchronize()
    act_peak = torch.cuda.max_memory_allocated() - base
    wbytes = weight_bytes(net)
    eager = _time_ms(lambda: net(*args, **kwargs), iters)
    graph = _graph_ms(net, args, kwargs, iters)
    return {"weight_mb": wbytes / 2**20, "peak_mb": (wbytes + act_peak) / 2**20, "eager_ms": eager,
            "graph_ms": graph}


def check_outputs(fp: nn.Module, quant: nn.Module, arch: str, device: torch.device) -> float:
    """SQNR (dB) of the quantized UNet's output against fp16 on the benchmark input (sanity: not garbage)."""
    from nodes.mixdq.sensitivity import sqnr_db

    args, kwargs = inputs(arch, 1, device)
    with torch.no_grad():
        return sqnr_db(fp(*args, **kwargs).sample.float(), quant(*args, **kwargs).sample.float())


def run_cost(archs: list[str], batches: list[int], iters: int, log=lambda s: None) -> list[dict]:
    """Every (arch, variant, batch) row; fp16 first, each quantized variant built from it in the same run."""
    device = torch.device("cuda")
    rows = []
    for arch in archs:
        fp = build(arch, device)
        variants: list[tuple[str, nn.Module]] = [("fp16", fp)]
        for name, (w, a) in {"W8A8": (8, 8), "W4A8": (4, 8)}.items():
            q = quantize_network(fp, cost_config(fp, arch, w, a, device))
            variants.append((name, q))
            log(f"[{arch}] {name}: output SQNR vs fp16 = {check_outputs(fp, q, arch, device):.1f} dB")
        for batch in batches:
            for name, net in variants:
                row = {"arch": arch, "variant": name, "batch": batch, **measure(net, arch, batch, device, iters)}
                rows.append(row)
                log(f"{arch:5s} {name:5s} b={batch}: weights {row['weight_mb']:8.1f} MB  peak {row['peak_mb']:8.1f} MB"
                    f"  eager {row['eager_ms']:7.2f} ms  graph {row['graph_ms']:7.2f} ms")
        del variants, fp
        torch.cuda.empty_cache()
    return rows
