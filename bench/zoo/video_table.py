"""The built-in video model's quality on held-out captions (one command).

    fewstep bench video-model [--clips 39] [--steps 50 10 5] [--device cpu|cuda] [--out FILE.json]
    fewstep bench video-model --from-report DIR/report.json [--out FILE.json]   # a training run's own eval

Rows: real renders (a second draw of start positions: each metric's floor / ceiling), then the shipped
model with Euler at each step count (50 = the teacher; its own 10- and 5-step Euler are the baselines a
few-step student must beat), shift 3 and CFG 4 as shipped. One clip of 8 frames per held-out caption
(39 captions), the same noise seeds in every row. Columns (``nodes.zoo.video.evaluate``): per-frame
attribute accuracy (zoo probe, frames centred on the tracked object), motion accuracy (analytic
tracker), FD-Clip3D (temporal Fréchet distance of the 3D-conv feature net) and per-frame FD-EffNet,
both against real renders of the same captions; seconds per clip on the device named. Writes JSON and a
markdown table (beside the JSON) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "video-model.json"
COLUMNS = (("frame_attribute_accuracy", "frame attribute acc.", "{:.3f}"), ("motion_accuracy", "motion acc.", "{:.3f}"),
           ("fd_clip3d", "FD-Clip3D", "{:.3f}"), ("fd_effnet_frames", "FD-EffNet (frames)", "{:.2f}"),
           ("seconds_per_clip", "s / clip (batched)", "{:.2f}"), ("latency_s", "s / clip (batch 1)", "{:.1f}"))


def measure(clip_count: int, steps: list[int], device: str, shift: float, cfg: float, seed: int) -> dict[str, Any]:
    """Evaluate the shipped model and the real-render reference; returns the table's JSON."""
    from fewstep.nodes.zoo.builtin import load_probe
    from fewstep.nodes.zoo.effnet import load_efficientnet_lite0
    from fewstep.nodes.zoo.video import clips
    from fewstep.nodes.zoo.video import evaluate as ev
    from fewstep.nodes.zoo.video.features import load_features
    from fewstep.nodes.zoo.video.model import load_video_model

    model = load_video_model(device=device)
    probe, featnet, effnet = load_probe(device), load_features(device), load_efficientnet_lite0(device=device)
    specs = ev.heldout_specs(clip_count, clips.FRAMES, seed)
    reference = ev.render_specs(specs)
    rows = {"real renders": ev.evaluate_reference(specs, reference, probe=probe, featnet=featnet, effnet=effnet)}
    for n in steps:
        logging.info("video-model: Euler %d steps", n)
        rows[f"Euler {n} steps"] = ev.evaluate_model(model, specs, steps=n, shift=shift, cfg=cfg, probe=probe,
                                                     featnet=featnet, reference=reference, effnet=effnet, seed=seed)
    return {"rows": rows, "clips": len(specs), "frames": clips.FRAMES, "shift": shift, "cfg": cfg, "seed": seed,
            "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "model": model.name,
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "dit": model.info.get("dit")}


def from_report(path: Path) -> dict[str, Any]:
    """The table of a training run's report.json (its held-out eval). Where the run also saved its clips
    (``eval_clips.npz`` beside the report) and FD-EffNet is missing, it is measured here on those clips."""
    report = json.loads(path.read_text())
    ev = report["eval"]
    rows = {"real renders": dict(ev["reference"])}
    rows |= {f"Euler {v['steps']} steps": dict(v) for k, v in ev.items() if k.startswith("euler_")}
    cfg = report["config"]
    clips_file = path.parent / "eval_clips.npz"
    if clips_file.is_file() and "fd_effnet_frames" not in rows["real renders"]:
        _add_fd_effnet(rows, clips_file, cfg)
    return {"rows": rows, "clips": cfg["eval_clips"], "frames": 8, "shift": cfg["eval_shift"], "cfg": cfg["eval_cfg"],
            "seed": cfg["seed"], "device": report.get("device", "?"), "model": "training run " + path.parent.name,
            "date": report.get("finished", "?"), "dit": report.get("parameters")}


def _add_fd_effnet(rows: dict[str, dict[str, Any]], clips_file: Path, cfg: dict[str, Any]) -> None:
    """Per-frame FD-EffNet of the saved clips against the saved reference (real renders of the same captions);
    the real-render row re-renders the second draw of starts exactly as ``evaluate_reference`` does."""
    import random

    import numpy as np

    from fewstep.nodes.core.metrics import fd_effnet
    from fewstep.nodes.zoo.effnet import load_efficientnet_lite0
    from fewstep.nodes.zoo.video import clips
    from fewstep.nodes.zoo.video import evaluate as ev

    saved = np.load(clips_file)
    effnet = load_efficientnet_lite0()
    frames = lambda a: torch.from_numpy(np.asarray(a)).flatten(0, 1).float() / 255.0  # noqa: E731
    reference = frames(saved["reference"])
    specs = ev.heldout_specs(cfg["eval_clips"], clips.FRAMES, cfg["seed"])
    rng = random.Random("reference:1")
    again = [clips.sample_start(s.shape, s.colour, s.size, s.motion, s.frames, rng) for s in specs]
    rows["real renders"]["fd_effnet_frames"] = fd_effnet(frames(ev.render_specs(again).numpy()), reference, effnet)
    for key in saved.files:
        if key.startswith("euler_"):
            rows[f"Euler {key.split('_')[1]} steps"]["fd_effnet_frames"] = fd_effnet(frames(saved[key]), reference, effnet)


def latency(steps: list[int], device: str, shift: float, cfg: float, repeats: int = 2,
            preset: str | None = None) -> dict[int, float]:
    """Best-of-``repeats`` wall seconds of one 8-frame clip (batch 1, CFG: two DiT rows per step, VAE decode
    included; text encoding excluded) at each step count, on ``device`` with the torch threads it has.
    ``preset``: time a randomly initialised DiT of that preset instead of the shipped one (speed does not
    depend on the weights' values)."""
    from fewstep.nodes.zoo.video.dit import PRESETS, VideoDiT
    from fewstep.nodes.zoo.video.model import generate, load_video_model

    model = load_video_model(device=device)
    if preset is not None:
        model.dit = VideoDiT(PRESETS[preset]).eval().requires_grad_(False).to(device)
    generate(model, ["a small red circle moving right"], steps=2, shift=shift, cfg=cfg)  # warm-up
    out = {}
    for n in steps:
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            generate(model, ["a small red circle moving right"], steps=n, shift=shift, cfg=cfg, seed=r)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out[n] = min(times)
    return out


def markdown(table: dict[str, Any]) -> str:
    head = "| row | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in table["rows"].items():
        cells = [fmt.format(row[key]) if key in row else "-" for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{table['clips']} held-out clips of {table['frames']} frames, shift {table['shift']:g}, "
                 f"CFG {table['cfg']:g}, seed {table['seed']}; {table['model']} on {table['device']}, {table['date']}.")
    if "latency_device" in table:
        lines.append(f"Batch-1 latency measured on {table['latency_device']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fewstep bench video-model", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=39, help="held-out clips, captions cycled (default 39: one each)")
    p.add_argument("--steps", type=int, nargs="+", default=[50, 10, 5], help="Euler step counts (default 50 10 5)")
    p.add_argument("--shift", type=float, default=3.0, help="schedule shift (default 3, as trained)")
    p.add_argument("--cfg", type=float, default=4.0, help="CFG scale (default 4)")
    p.add_argument("--seed", type=int, default=0, help="noise and start-position seed (default 0)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default cuda when present, else cpu)")
    p.add_argument("--from-report", type=Path, default=None, help="tabulate a training run's report.json instead")
    p.add_argument("--latency", action="store_true",
                   help="also time one clip at batch 1 per step count on --device (adds the last column)")
    p.add_argument("--reuse", action="store_true",
                   help="keep the quality rows of an existing --out JSON and only (re)measure --latency")
    p.add_argument("--latency-preset", default=None, help="time a random DiT of this preset (e.g. tiny) instead")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT.name} in "
                                                                  "bench/zoo/results; markdown beside it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.reuse and args.out.is_file():
        table = json.loads(args.out.read_text())
    elif args.from_report:
        table = from_report(args.from_report)
    else:
        table = measure(args.clips, args.steps, args.device, args.shift, args.cfg, args.seed)
    if args.latency:
        steps = args.steps
        for n, seconds in latency(steps, args.device, args.shift, args.cfg, preset=args.latency_preset).items():
            table["rows"].setdefault(f"Euler {n} steps", {})["latency_s"] = seconds
        which = f"a random '{args.latency_preset}' DiT" if args.latency_preset else "the shipped DiT"
        table["latency_device"] = f"{args.device} (generation on one thread), {which}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1, default=str))
    text = markdown(table)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
