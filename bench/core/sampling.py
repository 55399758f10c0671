"""``fewstep bench sampling``: few-step LCM sampling through our fast path vs diffusers' pipelines.

Same random-weight networks (speed does not depend on weight values), same process, same card:
SD1.5-size at 512^2 and SDXL-size at 1024^2, batch 1 and 8, 1/2/4/8 steps. Our job = noise -> LCM
sampler through ``fastpath.sample`` -> ``vae_fast`` decode -> uint8 on the CPU -> PIL images; diffusers'
job = ``StableDiffusion(XL)Pipeline`` + ``LCMScheduler`` with ``output_type="pil"``. Both get prompt
embeddings (text encoding is timed separately: our nodes cache it). Per UNet shape: FLOPs counted once
with ``torch.utils.flop_counter``, eager and graph-replay milliseconds, achieved TFLOP/s against the
card's bf16 matmul rate measured in the same run. A time guard skips what is left and still prints the
partial table. ``--quick`` runs tiny networks (CPU-friendly code-path check). ``--variants`` also times
the UNet preparations (layout x fused GroupNorm) and the decoder variants; ``--executor-jobs N`` runs the
default graph N times through the server and the executor alone (:mod:`bench.core.server`).

Usage: ``fewstep bench sampling [--quick] [--out DIR] [--budget-s 240] [--archs sd15,sdxl]
[--batches 1,8] [--steps 1,2,4,8] [--arch-steps "sd15=1,4;sdxl=1,2,4,8"] [--timed 5] [--profile]
[--variants] [--variants-only sdxl] [--no-diffusers] [--executor-jobs 12]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fewstep.bench.core.server import executor_overhead, server_overhead

SD15_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
SDXL_UNET = dict(sample_size=128, block_out_channels=(320, 640, 1280),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                 cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816, use_linear_projection=True)
SD_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TINY_UNET = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), norm_num_groups=8,
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8)
TINY_XL_UNET = dict(TINY_UNET, addition_embed_type="text_time", addition_time_embed_dim=8,
                    projection_class_embeddings_input_dim=32 + 6 * 8)
TINY_VAE = dict(block_out_channels=(16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
TEXT_SD15 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)


@dataclass
class Arch:
    name: str
    unet: dict
    vae: dict
    size: int            # image side in pixels
    ctx_dim: int
    pooled_dim: int = 0  # SDXL: pooled text embedding width (0: SD1.5-style, no added conditioning)


def archs(quick: bool) -> dict[str, Arch]:
    if quick:
        return {"sd15": Arch("sd15-tiny", TINY_UNET, TINY_VAE, 16, 32),
                "sdxl": Arch("sdxl-tiny", TINY_XL_UNET, TINY_VAE, 16, 32, pooled_dim=32)}
    return {"sd15": Arch("sd15", SD15_UNET, SD_VAE, 512, 768),
            "sdxl": Arch("sdxl", SDXL_UNET, SD_VAE, 1024, 2048, pooled_dim=1280)}


# ---------------------------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------------------------

def say(*parts: Any, flush: bool = True) -> None:
    """Progress lines on stdout (the device tool returns the end of stdout)."""
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    if flush:
        sys.stdout.flush()


def sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def wall_ms(fn: Callable[[], Any], dev: str, warm: int, n: int) -> float:
    """Median wall-clock milliseconds of ``fn`` (synchronised: end-to-end jobs include host work)."""
    for _ in range(warm):
        fn()
    sync(dev)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def flops_of(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_tflops(dev: str, dtype: torch.dtype = torch.bfloat16, n: int = 8192) -> float:
    """The card's dense matmul rate (random data, median of 10 after 3 warm-ups)."""
    if dev != "cuda":
        n = 512
    a = torch.randn(n, n, device=dev, dtype=dtype if dev == "cuda" else torch.float32)
    b = torch.randn_like(a)
    ms = wall_ms(lambda: a @ b, dev, warm=3, n=10)
    return 2 * n**3 / ms / 1e9


# ---------------------------------------------------------------------------------------------------
# the networks
# ---------------------------------------------------------------------------------------------------

@dataclass
class Models:
    arch: Arch
    unet: Any
    vae: Any
    dev: str
    dtype: torch.dtype
    conds: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    def cond(self, batch: int) -> dict[str, torch.Tensor]:
        """The model cond of ``loaders.UNetFn`` for one prompt (batch 1: the UNet call expands it):
        ``context`` [1, 77, D] and, for SDXL, ``pooled`` [1, P] and ``time_ids`` [1, 6]."""
        if not self.conds:
            g = torch.Generator(self.dev).manual_seed(1)
            c = {"context": torch.randn(1, 77, self.arch.ctx_dim, generator=g, device=self.dev, dtype=self.dtype)}
            if self.arch.pooled_dim:
                c["pooled"] = torch.randn(1, self.arch.pooled_dim, generator=g, device=self.dev, dtype=self.dtype)
                s = float(self.arch.size)
                c["time_ids"] = torch.tensor([[s, s, 0.0, 0.0, s, s]], device=self.dev)
            self.conds[1] = c
        return self.conds[1]

    def conditioning(self) -> list[list[Any]]:
        """The CONDITIONING link value a CLIPTextEncode node gives (cached by the executor)."""
        c = self.cond(1)
        return [[c["context"], {"pooled_output": c["pooled"]} if "pooled" in c else {}]]


def build(arch: Arch, dev: str, dtype: torch.dtype) -> Models:
    """Random-weight UNet + VAE built directly on the device (fast init, no downloads)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(dev):
        unet = UNet2DConditionModel(**arch.unet).to(dtype).eval().requires_grad_(False)
        vae = AutoencoderKL(**arch.vae, sample_size=arch.size).to(dtype).eval().requires_grad_(False)
    return Models(arch, unet, vae, dev, dtype)


def text_encode_ms(dev: str, dtype: torch.dtype, quick: bool) -> dict[str, float]:
    """CLIP-L text encoder at its real config (random weights): what a cache hit saves per job."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4) if quick \
        else TEXT_SD15
    with torch.device(dev):
        te = CLIPTextModel(CLIPTextConfig(**cfg)).to(dtype).eval()
    ids = torch.randint(0, 49407, (1, 77), device=dev)
    with torch.inference_mode():
        ms = wall_ms(lambda: te(ids), dev, warm=2, n=5)
    return {"clip_l_encode_ms": round(ms, 2)}


# ---------------------------------------------------------------------------------------------------
# our path and diffusers' path
# ---------------------------------------------------------------------------------------------------

class OurPath:
    """The KSampler + VAEDecode nodes' work without the executor: ``sampling.run`` (CPU noise as ComfyUI
    seeds it, LCM, the fast path on CUDA), then ``vae_fast`` decode to uint8 and PIL images."""

    def __init__(self, m: Models, fast: bool) -> None:
        from fewstep.nodes.core.denoiser import Denoiser, DiscreteVPSchedule
        from fewstep.nodes.core.loaders import UNetFn
        from fewstep.nodes.core.vae_fast import fast_decoder_for

        self.m, self.fast = m, fast
        arch = "sdxl" if m.arch.pooled_dim else "sd1"
        self.denoiser = Denoiser(UNetFn(m.unet), "eps", DiscreteVPSchedule.from_config(), boundary="lcm",
                                 extras={"arch": arch, "name": m.arch.name, "patches": []})
        self.decoder = fast_decoder_for(m.vae, 0.18215, cuda_graphs=fast)
        self.f = 2 ** (len(m.arch.vae["block_out_channels"]) - 1)

    def sigmas(self, steps: int) -> torch.Tensor:
        from fewstep.nodes.core.schedules import calculate_sigmas

        return calculate_sigmas(self.denoiser.schedule, "sgm_uniform", steps)

    def latents(self, batch: int, steps: int) -> torch.Tensor:
        from fewstep.nodes.core import sampling
        from fewstep.nodes.core.samplers import get_sampler

        m, side = self.m, self.m.arch.size // self.f
        latent = {"samples": torch.zeros(batch, 4, side, side)}
        spec = sampling.GuiderSpec(self.denoiser, m.conditioning())
        with torch.inference_mode():
            out, _ = sampling.run(spec, get_sampler("lcm"), self.sigmas(steps), latent, sampling.RandomNoiseSpec(0))
        return out["samples"]

    def job(self, batch: int, steps: int) -> list[Any]:
        from PIL import Image

        with torch.inference_mode():
            images = self.decoder.decode_uint8(self.latents(batch, steps))
        return [Image.fromarray(a.numpy()) for a in images]


def diffusers_pipe(m: Models) -> Any:
    from diffusers import LCMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    sched = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    if m.arch.pooled_dim:
        pipe = StableDiffusionXLPipeline(vae=m.vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                         tokenizer_2=None, unet=m.unet, scheduler=sched)
    else:
        pipe = StableDiffusionPipeline(vae=m.vae, text_encoder=None, tokenizer=None, unet=m.unet, scheduler=sched,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_job(pipe: Any, m: Models, batch: int, steps: int) -> Any:
    c = m.cond(1)
    extra = {"pooled_prompt_embeds": c["pooled"]} if m.arch.pooled_dim else {}
    return pipe(prompt_embeds=c["context"], num_inference_steps=steps, guidance_scale=1.0, output_type="pil",
                num_images_per_prompt=batch, height=m.arch.size, width=m.arch.size, **extra).images


# ---------------------------------------------------------------------------------------------------
# per-shape UNet figures
# ---------------------------------------------------------------------------------------------------

def unet_call(m: Models, batch: int) -> Callable[[], Any]:
    f = 2 ** (len(m.arch.vae["block_out_channels"]) - 1)
    x = torch.randn(batch, 4, m.arch.size // f, m.arch.size // f, device=m.dev, dtype=m.dtype)
    t = torch.full((batch,), 500.0, device=m.dev)
    from fewstep.nodes.core.loaders import UNetFn

    fn = UNetFn(m.unet)
    cond = m.cond(batch)
    return lambda: fn(x, t, cond)


def raw_graph_ms(call: Callable[[], Any], dev: str, n: int) -> float | None:
    """A plain CUDA graph of the UNet call in its current memory format (the anchor's method)."""
    if dev != "cuda":
        return None
    from fewstep.kernels.groupnorm import for_graphs

    with torch.inference_mode(False), torch.no_grad(), torch.backends.cudnn.flags(
            enabled=True, benchmark=True, deterministic=False, allow_tf32=True), for_graphs():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                call()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            call()
    ms = wall_ms(g.replay, dev, warm=2, n=n)
    del g
    return ms


def fast_unet_ms(path: OurPath, batch: int, n: int) -> float:
    """One step of the fast path as the sampler sees it (copy-in, replay, copy-out)."""
    from fewstep.nodes.core import fastpath
    from fewstep.nodes.core.guidance import BasicGuider

    m = path.m
    f = 2 ** (len(m.arch.vae["block_out_channels"]) - 1)
    x = torch.randn(batch, 4, m.arch.size // f, m.arch.size // f, device=m.dev)
    g = fastpath.accelerate(BasicGuider(path.denoiser, m.cond(batch)), x) if path.fast else \
        BasicGuider(path.denoiser, m.cond(batch))
    sigma = torch.tensor(5.0)
    with torch.inference_mode():
        return wall_ms(lambda: g(x, sigma), m.dev, warm=2, n=n)


# ---------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------

@dataclass
class Run:
    dev: str
    deadline: float
    quick: bool
    out: Path
    results: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    profile: bool = False
    variants: bool = False       # also time the UNet preparation variants (UNET_VARIANTS)
    timed: int = 5               # timed repetitions per job (fewer for SDXL batch 8)

    def time_left(self) -> float:
        return self.deadline - time.perf_counter()

    def save(self) -> None:
        self.results["rows"] = self.rows
        self.results["skipped"] = self.skipped
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "bench_sampling.json").write_text(json.dumps(self.results, indent=1, default=str))


def reps(m: Models, batch: int, most: int = 5) -> tuple[int, int]:
    """(warm-up, timed) repetitions: fewer for the heavy SDXL batch-8 jobs; at most ``most`` timed."""
    heavy = m.arch.pooled_dim and batch >= 8 and m.dev == "cuda"
    return (1, min(2, most)) if heavy else (1, most)


def unet_figures(run: Run, m: Models, batch: int, peak: float) -> dict[str, Any]:
    call = unet_call(m, batch)
    n = 3 if (m.arch.pooled_dim and batch >= 8) else 10
    with torch.inference_mode():
        fl = flops_of(call)
        eager = wall_ms(call, run.dev, warm=2, n=n)
    graph = raw_graph_ms(call, run.dev, n=n)
    fig = {"gflop_per_call": round(fl / 1e9, 3), "eager_nchw_ms": round(eager, 2),
           "graph_nchw_ms": None if graph is None else round(graph, 2),
           "tflops_eager_nchw": round(fl / eager / 1e9, 1)}
    if graph:
        fig["tflops_graph_nchw"] = round(fl / graph / 1e9, 1)
        fig["pct_of_matmul_graph_nchw"] = round(100 * fl / graph / 1e9 / peak, 1)
    return fig


def fast_unet_figures(run: Run, path: OurPath, batch: int, fig: dict[str, Any], peak: float) -> None:
    m = path.m
    n = 3 if (m.arch.pooled_dim and batch >= 8) else 10
    ms = fast_unet_ms(path, batch, n)
    fl = fig["gflop_per_call"] * 1e9
    fig["fastpath_step_ms"] = round(ms, 2)
    fig["tflops_fastpath"] = round(fl / ms / 1e9, 1)
    fig["pct_of_matmul_fastpath"] = round(100 * fl / ms / 1e9 / peak, 1)
    with torch.inference_mode():
        eager = wall_ms(unet_call(m, batch), run.dev, warm=1, n=n)     # after prepare_module: NHWC
    fig["eager_after_prepare_ms"] = round(eager, 2)


def bench_arch(run: Run, arch: Arch, batches: list[int], steps_list: list[int], peak: float,
               with_diffusers: bool) -> None:
    dtype = torch.float16 if run.dev == "cuda" else torch.float32
    t0 = time.perf_counter()
    m = build(arch, run.dev, dtype)
    arch_res: dict[str, Any] = {"build_s": round(time.perf_counter() - t0, 1), "unet": {}}
    run.results[arch.name] = arch_res
    say(f"[{arch.name}] built in {arch_res['build_s']} s", flush=True)
    todo = [(b, s) for b in batches for s in steps_list]
    diff_ms: dict[tuple[int, int], float] = {}
    for b in batches:
        if run.time_left() < 20:
            run.skipped.append(f"{arch.name} unet b{b}")
            continue
        arch_res["unet"][f"b{b}"] = unet_figures(run, m, b, peak)
        say(f"[{arch.name}] unet b{b}: {arch_res['unet'][f'b{b}']}", flush=True)
        if run.variants:
            arch_res.setdefault("unet_variants", {})[f"b{b}"] = unet_variants(run, m, b, peak)
    if with_diffusers:
        pipe = diffusers_pipe(m)
        for b, s in todo:
            if run.time_left() < 30:
                run.skipped.append(f"{arch.name} diffusers b{b} s{s}")
                continue
            warm, n = reps(m, b, run.timed)
            warm = 0 if any(bb == b for bb, _ in diff_ms) else warm     # same shapes as the last job: warm
            with torch.inference_mode():
                diff_ms[(b, s)] = wall_ms(lambda b=b, s=s: diffusers_job(pipe, m, b, s), run.dev, warm, n)
            say(f"[{arch.name}] diffusers b{b} s{s}: {diff_ms[(b, s)]:.1f} ms", flush=True)
        del pipe
    ours_e2e(run, m, todo, diff_ms, peak)
    m.conds.clear()
    m.unet = m.vae = None            # the models and their graphs go with the last references


def variants_only(run: Run, arch: Arch, batches: list[int], peak: float) -> None:
    """Only the UNet preparation variants and the decoder variants of one architecture (no jobs)."""
    dtype = torch.float16 if run.dev == "cuda" else torch.float32
    m = build(arch, run.dev, dtype)
    res = run.results.setdefault(arch.name, {})
    for b in batches:
        if run.time_left() > 25:
            res.setdefault("unet_variants", {})[f"b{b}"] = unet_variants(run, m, b, peak)
    if run.time_left() > 20:
        res["vae_decode"] = vae_figures(run, m, batches[:1])
    best = res.get("unet_variants", {}).get(f"b{batches[-1]}", {})
    timed = {k: v["graph_ms"] for k, v in best.items() if isinstance(v, dict)}
    if run.profile and timed and run.time_left() > 20:       # profile the fastest preparation
        from fewstep.nodes.core.fastpath import prepare_module

        cl, fused = UNET_VARIANTS[min(timed, key=timed.get)]
        prepare_module(m.unet, channels_last=cl, fused_groupnorm=fused)
        profile_unet(run, m, batches[-1])
    m.unet = m.vae = None
    run.save()


def ours_e2e(run: Run, m: Models, todo: list[tuple[int, int]], diff_ms: dict[tuple[int, int], float],
             peak: float) -> None:
    from fewstep.nodes.core import fastpath

    arch_res = run.results[m.arch.name]
    path = OurPath(m, fast=run.dev == "cuda")
    first: dict[int, float] = {}
    for b, s in todo:
        if run.time_left() < 15:
            run.skipped.append(f"{m.arch.name} ours b{b} s{s}")
            continue
        warm, n = reps(m, b, run.timed)
        if b not in first:                       # the first job at this shape pays the captures
            t0 = time.perf_counter()
            path.job(b, s)
            sync(run.dev)
            first[b] = (time.perf_counter() - t0) * 1e3
        else:
            warm = 0                             # same graphs as the last job: already warm
        ms = wall_ms(lambda b=b, s=s: path.job(b, s), run.dev, warm, n)
        fig = arch_res["unet"].get(f"b{b}", {})
        gflop = fig.get("gflop_per_call", 0.0)
        row = {"arch": m.arch.name, "res": m.arch.size, "batch": b, "steps": s, "ours_ms": round(ms, 1),
               "ours_img_s": round(b / ms * 1e3, 2), "first_job_ms": round(first[b], 1),
               "diffusers_ms": round(diff_ms[(b, s)], 1) if (b, s) in diff_ms else None,
               "unet_tflops_e2e": round(s * gflop / ms, 1) if gflop else None}
        if row["diffusers_ms"]:
            row["speedup"] = round(row["diffusers_ms"] / ms, 2)
            row["diffusers_img_s"] = round(b / row["diffusers_ms"] * 1e3, 2)
        run.rows.append(row)
        say(f"[{m.arch.name}] ours b{b} s{s}: {ms:.1f} ms (first job {first[b]:.0f} ms)", flush=True)
        run.save()
    for b in sorted(first):
        fig = arch_res["unet"].get(f"b{b}")
        if fig and run.time_left() > 10:
            fast_unet_figures(run, path, b, fig, peak)
    if run.time_left() > 15 and first:
        arch_res["vae_decode"] = vae_figures(run, m, sorted(first))
    arch_res["graph_cache"] = fastpath.cache_for(path.denoiser).summary()
    arch_res["vae_capture_s"] = round(path.decoder.capture_s, 2)
    if run.profile and run.time_left() > 20 and todo:
        profile(run, m, path, todo[0][0], 4)
        profile_unet(run, m, max(b for b, _ in todo))


def vae_figures(run: Run, m: Models, batches: list[int]) -> dict[str, Any]:
    """Decode-only medians (ms, IMAGE on the device) of the VAE variants: the eager fp16 module, the
    fast decoder as configured by default, and :func:`vae_variants` (norm kind x layout)."""
    from fewstep.nodes.core.vae_fast import FastVAEDecoder

    f = 2 ** (len(m.arch.vae["block_out_channels"]) - 1)
    out: dict[str, Any] = {}
    variants = {"fast": FastVAEDecoder(m.vae, 0.18215, cuda_graphs=run.dev == "cuda"),
                **(vae_variants(m, run.dev) if run.variants else {})}
    for b in batches:
        z = torch.randn(b, 4, m.arch.size // f, m.arch.size // f, device=m.dev)
        n = 2 if (m.arch.pooled_dim and b >= 8) else 5
        with torch.inference_mode():
            row = {"eager_module_ms": round(wall_ms(lambda z=z: m.vae.decode(z.to(m.dtype)).sample, run.dev, 1, n), 2)}
            for name, dec in variants.items():
                row[f"{name}_ms"] = round(wall_ms(lambda z=z, dec=dec: dec.decode_device(z), run.dev, 1, n), 2)
        out[f"b{b}"] = row
        say(f"[{m.arch.name}] vae decode b{b}: {row}")
    return out


# ---------------------------------------------------------------------------------------------------
# variants: which layout / norm each network shape wants (graph replay, decode-only)
# ---------------------------------------------------------------------------------------------------

UNET_VARIANTS = {"nchw": (False, False), "nchw_fusedgn": (False, True), "cl": (True, False),
                 "cl_fusedgn": (True, True)}


def unet_variants(run: Run, m: Models, batch: int, peak: float) -> dict[str, Any]:
    """Graph-replay ms of the UNet call under each (channels_last, fused GroupNorm) preparation, each on
    its own copy of the network (the preparation changes modules in place); TFLOP/s and % of matmul."""
    import copy

    from fewstep.nodes.core.fastpath import prepare_module

    n = 3 if (m.arch.pooled_dim and batch >= 8) else 10
    with torch.inference_mode():
        fl = flops_of(unet_call(m, batch))
    out: dict[str, Any] = {"gflop_per_call": round(fl / 1e9, 1)}
    original = m.unet
    try:
        for name, (cl, fused) in UNET_VARIANTS.items():
            if run.time_left() < 25:
                run.skipped.append(f"{m.arch.name} unet variant {name} b{batch}")
                continue
            m.unet = copy.deepcopy(original)
            prepare_module(m.unet, channels_last=cl, fused_groupnorm=fused)
            ms = raw_graph_ms(unet_call(m, batch), run.dev, n)
            if ms is not None:
                out[name] = {"graph_ms": round(ms, 2), "tflops": round(fl / ms / 1e9, 1),
                             "pct_of_matmul": round(100 * fl / ms / 1e9 / peak, 1)}
            m.unet = None
            if run.dev == "cuda":
                torch.cuda.empty_cache()
    finally:
        m.unet = original
    say(f"[{m.arch.name}] unet variants b{batch}: {out}")
    return out


def vae_variants(m: Models, dev: str) -> dict[str, Any]:
    """The fast decoder's options to time: GroupNorm kind x layout (all bf16, graphs on CUDA)."""
    from fewstep.nodes.core.vae_fast import FastVAEDecoder

    graphs = dev == "cuda"
    return {"plain_gn": FastVAEDecoder(m.vae, 0.18215, cuda_graphs=graphs, fused_groupnorm=False),
            "split_gn": FastVAEDecoder(m.vae, 0.18215, cuda_graphs=graphs, split_groupnorm=True),
            "fused_gn": FastVAEDecoder(m.vae, 0.18215, cuda_graphs=graphs, fused_groupnorm=True),
            "fused_gn_cl": FastVAEDecoder(m.vae, 0.18215, cuda_graphs=graphs, fused_groupnorm=True,
                                          channels_last=True)}


# ---------------------------------------------------------------------------------------------------
# profile: what bounds the run
# ---------------------------------------------------------------------------------------------------

def _category(name: str) -> str:
    n = name.lower()
    if "flash" in n or "fmha" in n or "attention" in n or "sdpa" in n:
        return "attention"
    if "gemm" in n or "conv" in n or "xmma" in n or "cutlass" in n or "sm90" in n or "wgrad" in n \
            or "implicit" in n or "nhwc" in n or "cudnn" in n:
        return "conv+gemm"
    if "norm" in n or "welford" in n:
        return "norm"
    if "memcpy" in n or "memset" in n:
        return "copy"
    return "elementwise/other"


def _by_category(prof: Any) -> dict[str, float]:
    cats: dict[str, float] = {}
    for evt in prof.key_averages():
        dev_us = getattr(evt, "self_device_time_total", 0) or getattr(evt, "self_cuda_time_total", 0)
        if dev_us and evt.device_type.name == "CUDA":
            cats[_category(evt.key)] = cats.get(_category(evt.key), 0.0) + dev_us / 1e3
    return {k: round(v, 2) for k, v in sorted(cats.items())}


def profile_unet(run: Run, m: Models, batch: int) -> None:
    """One eager UNet call (after the fast path's preparation) under the profiler: where its kernel
    time goes by category (the graph replays the same kernels without the launch gaps)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    call = unet_call(m, batch)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.dev == "cuda" else [])
    with torch.inference_mode():
        call()
        sync(run.dev)
        with tprofile(activities=acts) as prof:
            call()
            sync(run.dev)
    key = f"profile_{m.arch.name}_unet_b{batch}"
    cats = _by_category(prof)
    run.results[key] = {"gpu_kernel_ms_by_category": cats, "gpu_kernel_ms_total": round(sum(cats.values()), 2)}
    sort = "self_cuda_time_total" if run.dev == "cuda" else "self_cpu_time_total"
    (run.out / f"{key}.txt").write_text(prof.key_averages().table(sort_by=sort, row_limit=40))
    say(f"[{m.arch.name}] {key}: {run.results[key]}")


def profile(run: Run, m: Models, path: OurPath, batch: int, steps: int) -> None:
    """torch.profiler over one of our jobs: kernel time by category vs wall time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.dev == "cuda" else [])
    path.job(batch, steps)
    sync(run.dev)
    t0 = time.perf_counter()
    with tprofile(activities=acts) as prof:
        path.job(batch, steps)
        sync(run.dev)
    wall = (time.perf_counter() - t0) * 1e3
    cats = _by_category(prof)
    key = f"profile_{m.arch.name}_b{batch}_s{steps}"
    run.results[key] = {"wall_ms_under_profiler": round(wall, 1), "gpu_kernel_ms_by_category": cats,
                        "gpu_kernel_ms_total": round(sum(cats.values()), 2)}
    sort = "self_cuda_time_total" if run.dev == "cuda" else "self_cpu_time_total"
    (run.out / f"{key}.txt").write_text(prof.key_averages().table(sort_by=sort, row_limit=40))
    say(f"[{m.arch.name}] {key}: {run.results[key]}", flush=True)


# ---------------------------------------------------------------------------------------------------
# table + CLI
# ---------------------------------------------------------------------------------------------------

COLUMNS = ["arch", "res", "batch", "steps", "diffusers_ms", "ours_ms", "speedup", "diffusers_img_s",
           "ours_img_s", "unet_tflops_e2e", "first_job_ms"]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [" | ".join(COLUMNS), " | ".join("---" for _ in COLUMNS)]
    for row in rows:
        lines.append(" | ".join("" if row.get(c) is None else str(row.get(c)) for c in COLUMNS))
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fewstep bench sampling", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny networks: a code-path check (CPU is fine)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="folder for the JSON")
    p.add_argument("--budget-s", type=float, default=300.0, help="skip what is left after this many seconds")
    p.add_argument("--archs", default="sd15,sdxl")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--steps", default="1,2,4,8")
    p.add_argument("--profile", action="store_true", help="torch.profiler over one job per arch")
    p.add_argument("--no-diffusers", action="store_true", help="only our path")
    p.add_argument("--variants", action="store_true", help="also time the UNet layout / GroupNorm variants")
    p.add_argument("--timed", type=int, default=5, help="timed repetitions per job (median; >= 1)")
    p.add_argument("--arch-steps", default="", help='per-arch steps overriding --steps, e.g. "sd15=1,4;sdxl=1,2,4,8"')
    p.add_argument("--variants-only", default="", help="archs for which to time only the variants (no jobs)")
    p.add_argument("--executor-jobs", type=int, default=12,
                   help="jobs of the default graph through the executor (0: skip)")
    return p.parse_args(argv)


def steps_for(args: argparse.Namespace, arch: str) -> list[int]:
    """The step counts of one architecture: its ``--arch-steps`` entry, else ``--steps``."""
    table = dict(item.split("=", 1) for item in filter(None, args.arch_steps.split(";")))
    unknown = set(table) - {"sd15", "sdxl"}
    if unknown:
        raise SystemExit(f"--arch-steps: unknown arch {sorted(unknown)} (use sd15, sdxl)")
    return [int(s) for s in table.get(arch, args.steps).split(",")]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fewstep bench sampling``; prints the table last and writes bench_sampling.json."""
    args = parse(list(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cpu":
        torch.set_num_threads(1)     # tiny tensors: a spinning thread pool on a shared CPU is far slower
    run = Run(dev, time.perf_counter() + args.budget_s, args.quick, args.out, profile=args.profile,
              variants=args.variants, timed=max(1, args.timed))
    torch.backends.cuda.matmul.allow_tf32 = True
    run.results["meta"] = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "argv": argv if argv is not None else sys.argv[1:]}
    try:
        import diffusers

        run.results["meta"]["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    peak = matmul_tflops(dev)
    run.results["matmul_bf16_tflops"] = round(peak, 1)
    run.results.update(text_encode_ms(dev, torch.float16 if dev == "cuda" else torch.float32, args.quick))
    say(f"device {run.results['meta']['device']}; bf16 matmul {peak:.0f} TFLOP/s", flush=True)
    table_of = archs(args.quick)
    try:
        for name in args.archs.split(","):
            if run.time_left() < 30:
                run.skipped.append(f"{name} (time budget)")
                continue
            bench_arch(run, table_of[name], [int(b) for b in args.batches.split(",")],
                       steps_for(args, name), peak, not args.no_diffusers)
            if dev == "cuda":
                torch.cuda.empty_cache()
        for name in filter(None, args.variants_only.split(",")):
            if run.time_left() > 30:
                variants_only(run, table_of[name], [int(b) for b in args.batches.split(",")], peak)
        if args.executor_jobs and run.time_left() > 15:
            try:
                run.results["executor"] = {**server_overhead(args.executor_jobs),
                                           "executor_direct": executor_overhead(args.executor_jobs)}
            except Exception as exc:  # noqa: BLE001 - report, keep the table
                run.results["executor"] = {"error": f"{type(exc).__name__}: {exc}"}
            say("server and executor (default graph, built-in model):", run.results["executor"])
    finally:
        run.save()
        say(json.dumps({k: v for k, v in run.results.items() if k != "rows"}, indent=1, default=str))
        say(table(run.rows))
        if run.skipped:
            say("skipped (time guard):", ", ".join(run.skipped))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
