"""Tile-sparse attention speed: Efficient-vDiT's a:b masks against dense attention at the same shapes.

    fewstep bench vdit-kernel [--frames 8,24] [--tokens 3600] [--heads 24] [--head-dim 64] [--out DIR]

Rows: dense SDPA (the baseline, measured in the same run), and for each mask the fused flex-attention
kernel (CUDA: ``torch.compile``d ``flex_attention`` with a block mask) and the gathered PyTorch version
(only the kept tiles, batched SDPA), with the speed-up and the ideal ``1 / (1 - sparsity)``. Defaults are
the paper's 720p shapes: 29 and 93 video frames are 8 and 24 latent frames of 45 x 80 = 3600 tokens. On a
machine without CUDA the shapes shrink (``--tokens 256 --heads 4``) and flex is skipped: its CPU form is an
unfused reference. Writes ``vdit_kernel.json`` and ``vdit_kernel.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from fewstep.kernels.tile_attention import (
    TileLayout,
    flex_tile_attention,
    gathered_tile_attention,
)

PAPER_MASKS = {8: ("4:4", "3:5", "2:6", "1:7"), 24: ("12:12", "8:16", "6:18", "4:20", "3:21")}
# Efficient-vDiT Table 1 (720p, 29 / 93 frames): mask -> kernel speed-up over full attention
PAPER_SPEEDUP = {"4:4": 1.25, "3:5": 1.46, "2:6": 1.86, "1:7": 2.83, "12:12": 1.32, "8:16": 1.72, "6:18": 2.14,
                 "4:20": 2.91, "3:21": 3.67}


def time_ms(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    """Median wall time of ``fn`` in ms (CUDA events on a GPU), after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1e3)
    return sorted(times)[len(times) // 2]


def measure(frames: int, tokens: int, heads: int, head_dim: int, repeats: int) -> list[dict[str, object]]:
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, heads, frames * tokens, head_dim, device=device, dtype=dtype, generator=g)
               for _ in range(3))
    dense = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), repeats)
    rows: list[dict[str, object]] = [{"frames": frames, "mask": "dense", "sparsity": 0.0, "impl": "sdpa",
                                      "ms": dense, "speedup": 1.0, "ideal": 1.0}]
    flex = torch.compile(flex_tile_attention) if cuda else None
    for name in PAPER_MASKS.get(frames, (f"{max(1, frames // 4)}:{frames - max(1, frames // 4)}",)):
        layout = TileLayout.parse(name)
        impls = {"gathered": lambda layout=layout: gathered_tile_attention(q, k, v, layout, tokens)}
        if flex is not None:
            impls["flex"] = lambda layout=layout: flex(q, k, v, layout, tokens)
        for impl, fn in impls.items():
            ms = time_ms(fn, repeats)
            rows.append({"frames": frames, "mask": name, "sparsity": round(layout.sparsity, 4), "impl": impl,
                         "ms": ms, "speedup": dense / ms, "ideal": 1 / (1 - layout.sparsity),
                         "paper_speedup": PAPER_SPEEDUP.get(name)})
    return rows


def markdown(rows: list[dict[str, object]], card: str, shape: str) -> str:
    lines = [f"Card: {card}; {shape}.", "",
             "| frames | mask | sparsity | impl | ms | speed-up | 1/(1-s) | paper |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = r.get("paper_speedup")
        lines.append(f"| {r['frames']} | {r['mask']} | {100 * float(r['sparsity']):.1f}% | {r['impl']} | "
                     f"{float(r['ms']):.2f} | {float(r['speedup']):.2f}x | {float(r['ideal']):.2f}x | "
                     f"{f'{paper:.2f}x' if paper else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fewstep bench vdit-kernel", description=__doc__.split("\n")[0])
    cuda = torch.cuda.is_available()
    p.add_argument("--frames", default="8,24", help="latent frames per clip, comma-separated (default: 8,24)")
    p.add_argument("--tokens", type=int, default=3600 if cuda else 256, help="tokens per frame")
    p.add_argument("--heads", type=int, default=24 if cuda else 4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10 if cuda else 3)
    p.add_argument("--out", type=Path, default=Path("."))
    args = p.parse_args(argv)
    rows = [row for frames in (int(f) for f in args.frames.split(",")) for row in
            measure(frames, args.tokens, args.heads, args.head_dim, args.repeats)]
    card = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, " \
                                                     f"{torch.get_num_threads()} threads)"
    shape = f"{args.tokens} tokens per frame, {args.heads} heads of {args.head_dim}, batch 1, torch {torch.__version__}"
    text = markdown(rows, card, shape)
    sys.stdout.write(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vdit_kernel.md").write_text(text)
    (args.out / "vdit_kernel.json").write_text(json.dumps(
        {"card": card, "shape": shape, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
