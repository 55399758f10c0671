"""Train the shipped Efficient-vDiT students: MLCD (stage 1), the mask search at each r (stage 2) and KD
(stage 3), on the built-in video model.

    python -m fewstep.bench.vdit.train_students --preset cpu --out DIR [--stage mlcd|kd|all]

Writes ``DIR/fewstep-vdit-mlcd.safetensors`` and ``DIR/fewstep-vdit-kd-r<r>.safetensors`` (+ JSON), and
``DIR/train_report.json`` (config, losses, searched masks, wall time). ``--stage kd`` reads the MLCD student
from DIR. Presets: ``cpu`` (minutes on one core of a shared 2-core machine) and ``gpu`` (the recipe).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

TOLERANCES = (0.025, 0.05, 0.1)
PROBE_PROMPTS = ("a small red circle moving right", "a large blue square bouncing", "a small green triangle moving up",
                 "a large white cross standing still")

# name -> (MLCD config fields, KD config fields, wall-time caps of one run in seconds)
# KD lr 2e-5: on the r = 0.1 masks (300 steps, 26 held-out clips, CPU 2026-12-08) the sparse student's final
# latents moved from 0.141 relative error to the dense student (no KD) to 0.168 at lr 1e-4 (output term only)
# and to 0.131 / 0.134 at lr 2e-5 with / without the attention term.
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any], float | None]] = {
    "cpu": (dict(steps=600, batch_size=8, lr=1e-4, pool_clips=128),
            dict(steps=600, batch_size=8, lr=2e-5, pool_clips=128), 300.0),
    "gpu": (dict(steps=6000, batch_size=32, lr=1e-4, pool_clips=2048),
            dict(steps=3000, batch_size=32, lr=2e-5, pool_clips=2048), None),
}


def tolerance_tag(r: float) -> str:
    """0.025 -> '0025' (file names without dots)."""
    return f"{r:.3f}".replace(".", "")


def search(student: Any, r: float, frames: int, steps: int) -> tuple[list[int | None], list[float], float]:
    """Stage 2 on the MLCD student: probe = its own ``steps``-step sampler (deterministic jumps = Euler on the
    segment boundaries, unguided) over the probe prompts."""
    from fewstep.nodes.vdit.attention import search_layer_masks
    from fewstep.nodes.vdit.nodes import runner

    result = search_layer_masks(student.dit, runner(student, list(PROBE_PROMPTS), frames, steps, 1.0, 0), frames, r)
    return list(result.refs), list(result.errors), result.sparsity


def load_teacher(device: str, root: Path | None, text_cache: Path | None) -> Any:
    """The base video model (``root`` overrides the zoo's weights/; ``text_cache`` replaces MiniLM)."""
    from fewstep.nodes.zoo.video.model import load_video_model
    from fewstep.nodes.zoo.video.train import TextTokenCache

    text = TextTokenCache.load(text_cache) if text_cache else None
    return load_video_model(device=device, root=root, text_encoder=text)


def main(argv: list[str] | None = None) -> int:
    from fewstep.nodes.core.train.loop import Checkpointer
    from fewstep.nodes.vdit.attention import with_layer_masks
    from fewstep.nodes.vdit.train import (
        KDConfig,
        MLCDConfig,
        load_student,
        save_student,
        train_kd,
        train_mlcd,
    )

    p = argparse.ArgumentParser(prog="python -m fewstep.bench.vdit.train_students", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage", choices=("mlcd", "kd", "all"), default="all")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--teacher-root", type=Path, default=None, help="folder of fewstep-tiny-video.* (default: the zoo's)")
    p.add_argument("--text-cache", type=Path, default=None,
                   help="MiniLM token cache (zoo.video.train.write_text_cache) instead of the installed MiniLM")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    mlcd_fields, kd_fields, cap = PRESETS[args.preset]
    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / "train_report.json"
    report: dict[str, Any] = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report["device"] = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    teacher = load_teacher(args.device, args.teacher_root, args.text_cache)
    if args.stage in ("mlcd", "all"):
        cfg = MLCDConfig(**mlcd_fields)
        t0 = time.time()
        student, state = train_mlcd(teacher, cfg, max_seconds=cap,
                                    checkpointer=Checkpointer(args.out / "ckpt-mlcd", every=100))
        save_student(student, args.out / "fewstep-vdit-mlcd.safetensors", {"mlcd": asdict(cfg), "steps_run": state.step})
        report["mlcd"] = {"config": asdict(cfg), "steps_run": state.step, "seconds": round(time.time() - t0, 1),
                          "losses": state.losses}
        report_path.write_text(json.dumps(report, indent=1))
    if args.stage in ("kd", "all"):
        dense = load_student("fewstep-vdit-mlcd.safetensors", teacher, root=args.out)
        cfg_kd = replace(KDConfig(**kd_fields), segments=int(dense.info["segments"]), shift=float(dense.info["shift"]),
                         base_steps=int(dense.info["base_steps"]))
        report["kd"] = {"config": asdict(cfg_kd), "runs": {}}
        for r in TOLERANCES:
            t0 = time.time()
            refs, errors, sparsity = search(dense, r, cfg_kd.frames, cfg_kd.segments)
            logging.info("r=%s masks %s sparsity %.3f", r, refs, sparsity)
            sparse = replace(dense, dit=with_layer_masks(dense.dit, refs), info={**dense.info, "tile_masks": refs})
            kd, state = train_kd(sparse, dense, cfg_kd, max_seconds=cap,
                                 checkpointer=Checkpointer(args.out / f"ckpt-kd-{tolerance_tag(r)}", every=100))
            kd.info["search_tolerance"] = r
            save_student(kd, args.out / f"fewstep-vdit-kd-r{tolerance_tag(r)}.safetensors",
                         {"kd": asdict(cfg_kd), "steps_run": state.step, "tolerance": r})
            report["kd"]["runs"][str(r)] = {"masks": refs, "search_errors": errors, "sparsity": sparsity,
                                            "steps_run": state.step, "seconds": round(time.time() - t0, 1),
                                            "losses": state.losses}
            report_path.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
