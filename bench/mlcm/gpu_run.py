"""The one GPU job behind the shipped students and the table's GPU columns.

    python -m fewstep.bench.mlcm.gpu_run --out DIR --minilm MINILM_DIR --seconds 210 --stage2-seconds 60 --n 300

Trains the stage-1 students (``nodes.mlcm.students``: lcm, mlcm_stage1 then MLCM stage 2 from it, slam,
slam_g1) as concurrent processes on the one GPU (the tiny UNet is launch-bound, so parallel processes share
the card at ~no cost to each other), then, with the card idle again, generates every table cell's latents for
the held-out prompts and times batch-1 latency. The latents come back as ``cells.safetensors`` (+
``cells.json``) and are judged anywhere with ``python -m fewstep.bench.mlcm.table --latents DIR/cells.safetensors``
(the judging networks do not have to travel to the GPU machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from fewstep.bench.mlcm import table
from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder

log = logging.getLogger("fewstep.mlcm.gpu_run")

# one process per group; MLCM stage 2 continues in its stage-1 process (its net stays in memory)
GROUPS = (("lcm",), ("mlcm_stage1", "mlcm"), ("slam",), ("slam_g1",))


def train_concurrently(args: argparse.Namespace, groups: tuple[tuple[str, ...], ...]) -> dict[str, dict]:
    """Run ``python -m fewstep.bench.mlcm.students --only <group>`` per group at once; merged reports by student."""
    extra = [x for k, v in (("--steps", args.steps), ("--batch", args.batch), ("--prompts", args.prompts))
             if v is not None for x in (k, str(v))]
    extra += ["--minilm", args.minilm] if args.minilm else []
    env = os.environ | {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 4) // len(groups)))}
    procs = []
    for group in groups:
        cmd = [sys.executable, "-m", "fewstep.bench.mlcm.students", "--out", str(args.out), "--only", *group,
               "--seconds", str(args.seconds), "--stage2-seconds", str(args.stage2_seconds),
               "--device", args.device, *extra]
        logf = open(args.out / f"train-{'-'.join(group)}.log", "w")    # noqa: SIM115 — closed below
        procs.append((group, subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env), logf))
    limit = args.seconds + args.stage2_seconds + 120                      # startup, export, slack
    t0 = time.monotonic()
    for group, proc, logf in procs:
        try:
            proc.wait(timeout=max(1.0, limit - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()
        log.info("%s exited with %s after %.0fs", group, proc.returncode, time.monotonic() - t0)
    report: dict[str, dict] = {}
    for group in groups:
        path = args.out / f"students-report-{'-'.join(group)}.json"
        if path.is_file():
            report |= json.loads(path.read_text())
    (args.out / "students-report.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.mlcm.gpu_run", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--minilm", default=None)
    p.add_argument("--seconds", type=float, default=210.0, help="wall-time cap of each stage-1 student")
    p.add_argument("--stage2-seconds", type=float, default=60.0, help="wall-time cap of MLCM stage 2")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--prompts", type=int, default=None, help="training prompts per process (default 4096)")
    p.add_argument("--only", nargs="*", default=None, help="train only these groups' first names (smoke runs)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    groups = tuple(g for g in GROUPS if args.only is None or g[0] in args.only)
    train_concurrently(args, groups)
    t_train = time.perf_counter() - t0
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    nets = table.load_nets(args.device, dtype, args.out)
    latents, cells = table.generate(args.device, nets, MiniLMTextEncoder.load(args.minilm, args.device), args.n)
    save_file(latents, str(args.out / "cells.safetensors"))
    info = {"device": table._device_name(args.device), "n": args.n, "cells": cells, "torch": torch.__version__,
            "seconds_training": t_train, "seconds_total": time.perf_counter() - t0}
    (args.out / "cells.json").write_text(json.dumps(info, indent=1))
    log.info("gpu_run done in %.0fs (training phase %.0fs)", info["seconds_total"], t_train)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
