"""Training the TDM students of the built-in video model (one K per run) and exporting them.

    python -m fewstep.bench.tdm.video_students --steps-k 4 --seconds 300 --out fewstep/nodes/tdm/weights   # CPU demo
    python -m fewstep.bench.tdm.video_students --steps-k 2 --seconds 300 --out fewstep/nodes/tdm/weights

Each run distils the shipped video DiT (``nodes/zoo/weights/fewstep-tiny-video.safetensors``) with
``nodes.tdm.video`` (TDM in the flow parameterisation): student and fake score are full copies of the DiT, the
prompts the built-in clips' 321 training captions (data-free: no clip is rendered), CFG 4 in the real score.
The run stops at ``--steps`` or ``--seconds``, whichever first; the student DiT goes to
``fewstep-tdm-video-k<K>.safetensors`` (fp16, K and the schedule in its header) and the run's record
(configuration, steps done, wall time, loss curve every 10 steps) to ``--report`` (JSON, one entry per K).
The fake score is not shipped.
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

from fewstep.nodes.core.train.flow_param import FlowNet
from fewstep.nodes.tdm.train import build_run, distill_tdm, student_view
from fewstep.nodes.tdm.video import (
    VIDEO_PRESETS,
    TDMVideoConfig,
    VideoFlowNet,
    save_video_student,
    trainable_copy,
    video_prompt_pool,
)
from fewstep.nodes.tdm.video_graph import video_prompts

log = logging.getLogger("fewstep.bench.tdm.video_students")

DEFAULT_REPORT = Path(__file__).resolve().parent / "results" / "video-students.json"

# The shipped students' recipe on the 2-core CPU (one torch thread, ~0.65 s a step at batch 16): the presets'
# values (TDMVideoConfig: batch 16, fake lr 5e-4, student lr 1e-4, CFG 4), stopped by the time budget.
CPU_RECIPE = {"steps": 100_000}


def student_file(steps_k: int) -> str:
    return f"fewstep-tdm-video-k{steps_k}.safetensors"


def load_teacher(device: str, text_cache: Path | None = None) -> Any:
    """The shipped video model; its text encoder is MiniLM, or a token cache file (a GPU machine without MiniLM)."""
    from fewstep.nodes.zoo.video.model import load_video_model
    from fewstep.nodes.zoo.video.train import TextTokenCache

    return load_video_model(device=device, text_encoder=TextTokenCache.load(text_cache) if text_cache else None)


def train(steps_k: int, seconds: float, out: Path, device: str, text_cache: Path | None = None,
          **changes: Any) -> dict[str, Any]:
    """One run: returns its record (and writes the student file into ``out``)."""

    base = VIDEO_PRESETS["tdm_video" if steps_k == 4 else "tdm_video_2"]
    cfg: TDMVideoConfig = replace(base, student_steps=steps_k, **(CPU_RECIPE | changes))
    model = load_teacher(device, text_cache)
    prompts = video_prompts("captions", "")
    pool = video_prompt_pool(model, prompts, cfg.frames)
    teacher = FlowNet(VideoFlowNet(model.dit))
    run = build_run(teacher, cfg, trainable_copy(model.dit), trainable_copy(model.dit))
    steps_log: list[dict[str, float]] = []
    t0 = time.time()
    state = distill_tdm(teacher, run, pool, cfg, device=device, max_seconds=seconds, log=steps_log)
    wall = time.time() - t0
    meta = {"student_steps": cfg.student_steps, "shift": cfg.shift, "top": cfg.top, "teacher": model.name,
            "train_steps": state.step, "train_seconds": round(wall, 1)}
    path = save_video_student(out / student_file(steps_k), student_view(run).net.dit, meta)
    curve = [{"step": i + 1, "generator": round(sum(r["generator"] for r in steps_log[i:i + 10]) / len(steps_log[i:i + 10]), 5),
              "fake": round(sum(r["fake"] for r in steps_log[i:i + 10]) / len(steps_log[i:i + 10]), 6)}
             for i in range(0, len(steps_log), 10)]
    log.info("K=%d: %d steps in %.0f s -> %s", steps_k, state.step, wall, path)
    return {"file": path.name, "config": asdict(cfg), "steps_done": state.step, "wall_seconds": round(wall, 1),
            "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu (one torch thread)",
            "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "loss_every_10_steps": curve}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.tdm.video_students", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps-k", type=int, required=True, help="K, the student's sampling steps (4 or 2 shipped)")
    p.add_argument("--seconds", type=float, default=300.0, help="wall-time budget of the run (default 300)")
    p.add_argument("--out", type=Path, required=True, help="folder of the student file")
    p.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="JSON record, one entry per K")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="fake-score lr (the student's is x generator ratio)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--text-cache", type=Path, default=None, help="MiniLM token states file instead of MiniLM")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    changes = {k: v for k, v in {"batch_size": args.batch_size, "lr": args.lr, "steps": args.max_steps}.items()
               if v is not None}
    record = train(args.steps_k, args.seconds, args.out, args.device, args.text_cache, **changes)
    report = json.loads(args.report.read_text()) if args.report.is_file() else {}
    report[f"k{args.steps_k}"] = record
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
