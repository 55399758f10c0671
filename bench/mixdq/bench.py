"""``fewstep bench mixdq`` (or ``python -m fewstep.bench.mixdq.bench``): MixDQ's cost and quality tables.

    fewstep bench mixdq cost    [--archs sd15,sdxl] [--batches 1,8] [--iters 20] [--out FILE.json]   (CUDA)
    fewstep bench mixdq quality [--n 64] [--steps 4] [--calib 32] [--acts] [--out FILE.json]         (CPU or CUDA)

``cost``: weight memory, peak memory and UNet latency (eager and CUDA graph) of fp16 (plain and fast-path
prepared), W8A8 (default and tuned plans) and W4A8 on random-weight SD1.5 / SDXL-size UNets, the profiler's
kernel time by category, and per layer shape the low-bit kernel against the fp16 layer. ``quality``: FD-EffNet and attribute accuracy of the zoo's
few-step student (MLCM, 4 steps) at full precision, MixDQ W8A8 / W4A8, naive uniform W8A8 / W4A8, and the BOS ablation;
with ``--acts``, MixDQ's mixed {4,8} activations at 7.7 mean bits against uniform A8 / A4.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path


def say(text: str) -> None:
    """A CLI line on stdout (flushed: the device machine returns only the tail of the output)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fewstep bench mixdq", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["cost", "quality"])
    p.add_argument("--archs", default="sd15,sdxl", help="cost: comma list of sd15, sdxl, tiny")
    p.add_argument("--batches", default="1,8", help="cost: comma list of batch sizes")
    p.add_argument("--iters", type=int, default=20, help="cost: timed repetitions (median reported)")
    p.add_argument("--variants", default=None,
                   help="cost: comma list of fp16, fp16 fast, W8A8 default, W8A8, W4A8 (default: all)")
    p.add_argument("--workers", type=int, default=12, help="cost: processes that precompile the kernels (0 = none)")
    p.add_argument("--budget-s", type=float, default=float("inf"),
                   help="cost: skip rows that would start after this many seconds (the JSON lists them)")
    p.add_argument("--n", type=int, default=64, help="quality: images per configuration")
    p.add_argument("--steps", type=int, default=4, help="quality: sampler steps")
    p.add_argument("--calib", type=int, default=32, help="quality: calibration prompts")
    p.add_argument("--max-calls", type=int, default=2, help="quality: sampler calls per SQNR probe (0 = all)")
    p.add_argument("--minilm", default=None, help="quality: pruned MiniLM folder (default: the installed package)")
    p.add_argument("--student", default=None, help="quality: student safetensors (default: the shipped MLCM one)")
    p.add_argument("--reuse", default=None, help="quality: take the probe scores from this earlier --out JSON")
    p.add_argument("--acts", action="store_true",
                   help="quality: the activation table (MixDQ {4,8} activations at 7.7 mean bits vs uniform A8 / A4)")
    p.add_argument("--effnet", default=None, help="quality: EfficientNet-Lite0 safetensors (default: the package's)")
    p.add_argument("--device", default=None, help="quality: cpu or cuda (default: cuda if available)")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    return p


def _header(mode: str) -> dict:
    import torch

    card = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"bench": f"mixdq {mode}", "command": " ".join(["fewstep bench mixdq", *sys.argv[1:]]),
            "card": card, "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _cost_table(rows: list[dict]) -> str:
    """Markdown: every row against fp16 (weights) and against the faster fp16 graph (speed)."""
    lines = ["| arch | variant | batch | weights MB | x less | peak MB | eager ms | graph ms | "
             "graph speed-up vs best fp16 |", "|---|---|---|---|---|---|---|---|---|"]
    base = {(r["arch"], r["batch"]): r for r in rows if r["variant"] == "fp16"}
    best: dict[tuple, float] = {}
    for r in rows:
        if r["variant"].startswith("fp16"):
            key = (r["arch"], r["batch"])
            best[key] = min(best.get(key, float("inf")), r["graph_ms"])
    for r in rows:
        b = base.get((r["arch"], r["batch"]), r)
        lines.append(f"| {r['arch']} | {r['variant']} | {r['batch']} | {r['weight_mb']:.1f} | "
                     f"{b['weight_mb'] / r['weight_mb']:.2f} | {r['peak_mb']:.1f} | {r['eager_ms']:.2f} | "
                     f"{r['graph_ms']:.2f} | {best.get((r['arch'], r['batch']), r['graph_ms']) / r['graph_ms']:.2f} |")
    return "\n".join(lines)


def shapes_markdown(shapes: dict[str, list[dict]], top: int = 12) -> str:
    """Per variant, the layer shapes with the most fp16 time: chosen plan and its speed-up over fp16."""
    lines = []
    for variant, rows in shapes.items():
        lines += [f"\n{variant}: per-shape kernel vs fp16 layer (cuBLAS / cuDNN), top {top} by fp16 time x count",
                  "| kind | rows M | N | K | layers | fp16 ms | low-bit ms | speed-up | plan |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows[:top]:
            lines.append(f"| {r['kind']} | {r['rows']} | {r['n']} | {r['k']} | {r['layers']} | {r['fp16_ms'] or 0:.4f} | "
                         f"{r['ms'] or 0:.4f} | {r['speedup_vs_fp16'] or 0:.2f} | {r['plan']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    result = _header(args.mode)
    if args.mode == "cost":
        import torch

        if not torch.cuda.is_available():
            sys.stderr.write("bench mixdq cost needs a CUDA GPU\n")
            return 2
        from fewstep.bench.mixdq.cost import run_cost

        variants = args.variants.split(",") if args.variants else None

        def save(partial: dict) -> None:
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps({**result, **partial, "partial": True}, indent=1))

        result |= run_cost(args.archs.split(","), [int(b) for b in args.batches.split(",")], args.iters, log=say,
                           variants=variants, workers=args.workers, save=save, budget_s=args.budget_s)
        table = _cost_table(result["rows"]) + "\n" + shapes_markdown(result["shapes"])
    else:
        from fewstep.bench.mixdq.quality import quality_table, run_quality

        result |= run_quality(n=args.n, steps=args.steps, n_calib=args.calib, device=args.device, log=say,
                              minilm=args.minilm, effnet=args.effnet, max_calls=args.max_calls or None,
                              reuse=args.reuse, student=args.student, acts=args.acts)
        table = quality_table(result["rows"])
    say(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**result, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
