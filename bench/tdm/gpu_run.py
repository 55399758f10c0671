"""The one GPU job behind the shipped TDM students and the table's latents.

    python -m fewstep.bench.tdm.gpu_run --out DIR --minilm MINILM_DIR --seconds 270 --n 300

Trains the three students of ``nodes.tdm.students`` within ``--seconds`` of wall time in total (split by the
recipes' time shares; each stops on time, not on a step count), then generates every table cell's latents for
the held-out prompts and times batch-1 latency. Outputs: the student files, ``students-report.json``,
``cells.safetensors`` + ``cells.json`` and ``gpu_run.log``; judge them anywhere with
``python -m fewstep.bench.tdm.table --latents DIR/cells.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from fewstep.bench.mlcm import table as mt
from fewstep.bench.tdm import students, table
from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.tdm.gpu_run", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--minilm", default=None)
    p.add_argument("--seconds", type=float, default=270.0, help="training wall time of all students together")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--prompts", type=int, default=4096)
    p.add_argument("--only", nargs="*", default=None, help="train only these recipes (default: all)")
    p.add_argument("--teacher-steps", default="1,2,4,50", help="teacher rows (a CPU smoke run skips 50)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(args.out / "gpu_run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.getLogger("fewstep").addHandler(handler)
    logging.getLogger("fewstep").setLevel(logging.INFO)
    t0 = time.perf_counter()
    extra = [x for k, v in (("--steps", args.steps), ("--batch", args.batch)) if v is not None for x in (k, str(v))]
    extra += ["--only", *args.only] if args.only else []
    students.main(["--out", str(args.out), "--seconds", str(args.seconds), "--device", args.device,
                   "--prompts", str(args.prompts), *extra, *(["--minilm", args.minilm] if args.minilm else [])])
    t_train = time.perf_counter() - t0
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    nets = table.load_nets(args.device, dtype, args.out)
    teacher_steps = tuple(int(s) for s in args.teacher_steps.split(","))
    latents, cells = table.generate(args.device, nets, MiniLMTextEncoder.load(args.minilm, args.device), args.n,
                                    teacher_steps=teacher_steps)
    save_file(latents, str(args.out / "cells.safetensors"))
    info = {"device": mt._device_name(args.device), "n": args.n, "cells": cells, "torch": torch.__version__,
            "seconds_training": t_train, "seconds_total": time.perf_counter() - t0}
    (args.out / "cells.json").write_text(json.dumps(info, indent=1))
    logging.getLogger("fewstep.tdm").info("gpu_run done in %.0fs (training %.0fs)", info["seconds_total"], t_train)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
