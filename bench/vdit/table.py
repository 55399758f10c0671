"""Efficient-vDiT end to end on the built-in video model: teacher, MLCD student, searched masks with and
without KD (one command, baseline in the same run).

    fewstep bench vdit [--clips 78] [--weights DIR] [--device cpu|cuda] [--out FILE.json]

Rows (the same held-out captions and noise seeds in every row):

- real renders: a second draw of real clips, each metric's floor;
- base teacher: the shipped video model, Euler 50 steps, CFG 4; and its own Euler at 10 steps (what the
  10-step student must beat at equal steps);
- MLCD dense: the shipped MLCD student, 10 consistency steps (deterministic jumps on its segment
  boundaries), unguided (CFG distilled in: one DiT row per step instead of two);
- search r (no KD): the MLCD student with the per-layer masks the search picked at tolerance r
  (r = 0.025, 0.05, 0.1; the masks recorded in the KD students' files);
- KD r: the shipped KD student (those masks, trained to match the dense MLCD student).

Columns: mean tile sparsity; FD-Clip3D (temporal Fréchet distance against real renders of the same
captions) and per-frame FD-EffNet; motion accuracy (analytic tracker); distance to the dense MLCD student
(FD-Clip3D between the two sets of clips, and the latents' relative error on the same seeds: what the
sparse models should keep small); attention speed-up over dense SDPA measured on this CPU (every layer's
self-attention, at the model's shape of 8 frames x 16 tokens and at 8 frames x 256 tokens, the shape where
the tile kernel's savings show); seconds per clip (batched sampling incl. VAE decode). Writes JSON and a
markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "vdit.json"
TOLERANCES = ("0.025", "0.05", "0.1")
COLUMNS = (("sparsity", "sparsity", "{:.1%}"), ("fd_clip3d", "FD-Clip3D ↓", "{:.2f}"),
           ("fd_effnet_frames", "FD-EffNet frames ↓", "{:.2f}"), ("motion_accuracy", "motion acc.", "{:.3f}"),
           ("fd_clip3d_vs_mlcd", "FD-Clip3D vs MLCD ↓", "{:.2f}"), ("latent_rel_err_vs_mlcd", "latent err. vs MLCD ↓", "{:.3f}"),
           ("attn_speedup_model", "attn speed-up (8x16 tok)", "{:.2f}x"),
           ("attn_speedup_256", "attn speed-up (8x256 tok)", "{:.2f}x"), ("seconds_per_clip", "s / clip", "{:.3f}"))


def attention_speedup(masks: list[int | None], frames: int, tokens: int, heads: int, head_dim: int,
                      repeats: int = 7) -> float:
    """Dense-SDPA time over tile-sparse time for one self-attention call per layer (the layers' masks),
    medians of interleaved repeats on this machine (gathered kernel; dense layers cost the same in both)."""
    import torch.nn.functional as F

    from fewstep.kernels.tile_attention import TileLayout, gathered_tile_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, frames * tokens, head_dim, generator=g) for _ in range(3))

    def dense() -> None:
        for _ in masks:
            F.scaled_dot_product_attention(q, k, v)

    def sparse() -> None:
        for refs in masks:
            if refs is None:
                F.scaled_dot_product_attention(q, k, v)
            else:
                gathered_tile_attention(q, k, v, TileLayout(frames, min(refs, frames)), tokens)

    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    with torch.no_grad():
        dense(), sparse()                                                   # warm-up
        for _ in range(repeats):
            for name, fn in (("dense", dense), ("sparse", sparse)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()}
    return med["dense"] / med["sparse"]


def _sample(model: Any, specs: list[Any], *, seed: int, teacher_steps: int | None, cfg: float,
            batch: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(frames, latents, seconds per clip): teacher Euler when ``teacher_steps``, else the consistency sampler."""
    from fewstep.nodes.vdit.sampling import consistency_generate
    from fewstep.nodes.zoo.video.model import generate

    frames, latents = [], []
    t0 = time.perf_counter()
    for i in range(0, len(specs), batch):
        prompts = [s.caption() for s in specs[i:i + batch]]
        if teacher_steps is not None:
            f, lat = generate(model, prompts, frames=specs[0].frames, steps=teacher_steps, shift=3.0, cfg=cfg, seed=seed + i)
        else:
            f, lat = consistency_generate(model, prompts, frames=specs[0].frames, cfg=cfg, seed=seed + i)
        frames.append(f)
        latents.append(lat.cpu())
    return torch.cat(frames), torch.cat(latents), (time.perf_counter() - t0) / len(specs)


def models(weights: Path | None, device: str, teacher: Any) -> dict[str, tuple[Any, int | None, float]]:
    """Row name -> (VIDEO_MODEL, teacher Euler steps or None for the consistency sampler, CFG)."""
    from fewstep.bench.vdit.train_students import tolerance_tag
    from fewstep.nodes.vdit.attention import with_layer_masks
    from fewstep.nodes.vdit.train import load_student

    mlcd = load_student("fewstep-vdit-mlcd.safetensors", teacher, root=weights)
    rows: dict[str, tuple[Any, int | None, float]] = {
        "base teacher, Euler 50 steps": (teacher, 50, 4.0), "base teacher, Euler 10 steps": (teacher, 10, 4.0),
        "MLCD dense, 10 steps": (mlcd, None, 1.0)}
    kd = {r: load_student(f"fewstep-vdit-kd-r{tolerance_tag(float(r))}.safetensors", teacher, root=weights)
          for r in TOLERANCES}
    for r, student in kd.items():
        masks = student.info["tile_masks"]
        rows[f"search r={r}, no KD"] = (replace(mlcd, dit=with_layer_masks(mlcd.dit, masks),
                                                info={**mlcd.info, "tile_masks": masks}), None, 1.0)
    for r, student in kd.items():
        rows[f"search r={r} + KD"] = (student, None, 1.0)
    return rows


def measure(clip_count: int, weights: Path | None, device: str, seed: int, batch: int, teacher: Any) -> dict[str, Any]:
    from fewstep.nodes.vdit.attention import sparsity_of
    from fewstep.nodes.zoo.builtin import load_probe
    from fewstep.nodes.zoo.effnet import load_efficientnet_lite0
    from fewstep.nodes.zoo.video import clips
    from fewstep.nodes.zoo.video import evaluate as ev
    from fewstep.nodes.zoo.video.features import load_features, temporal_fd

    probe, featnet, effnet = load_probe(device), load_features(device), load_efficientnet_lite0(device=device)
    specs = ev.heldout_specs(clip_count, clips.FRAMES, seed)
    reference = ev.render_specs(specs)
    rows: dict[str, dict[str, Any]] = {
        "real renders": ev.evaluate_reference(specs, reference, probe=probe, featnet=featnet, effnet=effnet)}
    table = models(weights, device, teacher)
    mlcd_frames = mlcd_latents = None
    for name, (model, steps, cfg) in table.items():
        logging.info("vdit bench: %s", name)
        frames, latents, seconds = _sample(model, specs, seed=seed, teacher_steps=steps, cfg=cfg, batch=batch)
        row = ev.evaluate_clips(frames, specs, probe=probe, featnet=featnet, reference=reference, effnet=effnet)
        masks = model.info.get("tile_masks") or [None] * len(model.dit.blocks)
        row |= {"seconds_per_clip": seconds, "sparsity": sparsity_of(masks, clips.FRAMES), "masks": masks,
                "steps": steps or model.info.get("segments"), "cfg": cfg}
        if name.startswith("MLCD dense"):
            mlcd_frames, mlcd_latents = frames, latents
        if mlcd_frames is not None and not name.startswith("base"):
            row["fd_clip3d_vs_mlcd"] = temporal_fd(featnet, frames, mlcd_frames)
            row["latent_rel_err_vs_mlcd"] = float((latents - mlcd_latents).norm() / mlcd_latents.norm())
        cfg_dit = model.dit.config
        heads, head_dim = cfg_dit.heads, cfg_dit.dim // cfg_dit.heads
        row["attn_speedup_model"] = attention_speedup(masks, clips.FRAMES, cfg_dit.tokens_per_frame, heads, head_dim)
        row["attn_speedup_256"] = attention_speedup(masks, clips.FRAMES, 256, heads, head_dim)
        rows[name] = row
    return {"rows": rows, "clips": len(specs), "frames": clips.FRAMES, "seed": seed, "device": device,
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s)" if device == "cpu"
            else torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d", time.gmtime())}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| row | " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in result["rows"].items():
        cells = [fmt.format(row[key]) if key in row else "-" for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"{result['clips']} held-out clips of {result['frames']} frames, seed {result['seed']}; "
              f"{result['machine']}, {result['date']}."]
    masks = {name: row["masks"] for name, row in result["rows"].items() if "+ KD" in name}
    lines.append("Per-layer reference frames (a of a:b; None = dense): " +
                 "; ".join(f"{name.split(' + ')[0]}: {m}" for name, m in masks.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fewstep bench vdit", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=78, help="held-out clips, captions cycled (default 78: two each)")
    p.add_argument("--weights", type=Path, default=None, help="folder of the students (default: the pack's weights/)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=13, help="clips per sampling call")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--teacher-root", type=Path, default=None, help="folder of fewstep-tiny-video.* (default: the zoo's)")
    p.add_argument("--text-cache", type=Path, default=None, help="MiniLM token cache instead of the installed MiniLM")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)            # the gathered kernel's launches dominate at 8x16 tokens; 1 thread is steadier
    from fewstep.bench.vdit.train_students import load_teacher

    teacher = load_teacher(args.device, args.teacher_root, args.text_cache)
    result = measure(args.clips, args.weights, args.device, args.seed, args.batch, teacher)
    result["command"] = " ".join(["fewstep bench vdit", *(sys.argv[1:] if argv is None else argv)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    text = markdown(result)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
