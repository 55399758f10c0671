"""The one GPU job behind the shipped R0 student and the table: every arm trains at once, then every cell.

    python -m fewstep.bench.r0.gpu_run --out DIR --minilm MINILM_DIR --seconds 330 --n 300

The arms (``nodes.r0.train.ARMS``) train as parallel processes (``python -m fewstep.bench.r0.students``), each
stopping on time: the built-in models are launch-bound on a GPU, so several processes fill it where one
cannot. Meanwhile this process generates the teacher's cells; then it loads each student and generates
its 4-step latents for the ``n`` held-out prompts, and times batch-1 latency. Saved under DIR:
``students/`` (weights + reports + logs), ``cells.safetensors`` + ``cells.json`` (judge with
``python -m fewstep.bench.r0.table --latents DIR/cells.safetensors``) and ``gpu_run.log``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from fewstep.bench.r0 import table
from fewstep.nodes.r0.train import ARMS

log = logging.getLogger("fewstep.r0.gpu_run")
AFTER_S = 60.0   # of --seconds, kept after training: saving the students, every student's cells (~5 s each) + slack


def spawn_arms(args: argparse.Namespace, until: float) -> dict[str, subprocess.Popen]:
    """Start one training process per arm, training until the unix time ``until`` whatever their start-up
    took; their output goes to ``students/<arm>.log``."""
    folder = args.out / "students"
    folder.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name in args.arms:
        cmd = [sys.executable, "-m", "fewstep.bench.r0.students", "--arm", name, "--out", str(folder), "--until",
               f"{until:.1f}", "--device", args.device, "--threads", str(args.threads), "--prompts", str(args.prompts)]
        cmd += [x for k, v in (("--minilm", args.minilm), ("--effnet", args.effnet), ("--batch", args.batch),
                               ("--steps", args.steps), ("--reward-chunk", args.reward_chunk)) if v is not None for x in (k, str(v))]
        handle = (folder / f"{name}.log").open("w")
        procs[name] = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
        log.info("started %s: %s", name, " ".join(cmd))
    return procs


def wait_arms(procs: dict[str, subprocess.Popen], deadline: float) -> dict[str, int]:
    """Exit codes; an arm still running at ``deadline`` is terminated (its student is then missing)."""
    codes = {}
    for name, proc in procs.items():
        try:
            codes[name] = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.terminate()
            codes[name] = proc.wait(timeout=30)
            log.error("%s: over the deadline, terminated", name)
    return codes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.r0.gpu_run", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--minilm", default=None)
    p.add_argument("--effnet", default=None, help="a pruned fp16 EfficientNet-Lite0 file (python -m fewstep.nodes.zoo.effnet FILE)")
    p.add_argument("--seconds", type=float, default=330.0, help="wall time of the whole job")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--device", default="cuda")
    p.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="step cap per arm (smoke runs)")
    p.add_argument("--prompts", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reward-chunk", type=int, default=None, help="passed to the arms (reward memory)")
    p.add_argument("--no-teacher", action="store_true", help="skip the teacher rows (a re-run of some arms)")
    p.add_argument("--after", type=float, default=AFTER_S, help="seconds kept after training for the cells")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "gpu_run.log")])
    torch.set_num_threads(args.threads)
    until = time.time() + max(5.0, args.seconds - args.after)
    procs = spawn_arms(args, until)
    from fewstep.bench.mlcm.table import device_name
    from fewstep.nodes.core.train.builtin import teacher_unet
    from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    enc = MiniLMTextEncoder.load(args.minilm, args.device)
    latents, cells = {}, []
    if not args.no_teacher:
        latents, cells = table.generate_rows(args.device, table.teacher_rows(teacher_unet(args.device, dtype)), enc,
                                             args.n)
    codes = wait_arms(procs, t0 + args.seconds - args.after + 25.0)
    rows = table.student_rows(args.out / "students", args.device, dtype)
    if rows:
        more, more_cells = table.generate_rows(args.device, rows, enc, args.n)
        latents |= more
        cells += more_cells
    save_file(latents, str(args.out / "cells.safetensors"))
    info = {"device": device_name(args.device), "n": args.n, "cells": cells, "exit_codes": codes,
            "train_until": until, "torch": torch.__version__, "seconds_total": time.monotonic() - t0}
    (args.out / "cells.json").write_text(json.dumps(info, indent=1))
    log.info("gpu_run done in %.0fs; exit codes %s", info["seconds_total"], codes)
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
