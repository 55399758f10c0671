"""The one GPU job behind the shipped students and the table's GPU columns.

    python -m nodes.mlcm.gpu_run --out DIR --minilm .carry/minilm --seconds 30 --n 500

Trains the four students (``nodes.mlcm.students``), then generates every table cell's latents for the
held-out prompts and times batch-1 latency on the GPU. The latents come back as ``cells.safetensors`` (+
``cells.json``) and are judged anywhere with ``python -m nodes.mlcm.table --latents DIR/cells.safetensors``
(the judging networks do not have to travel to the GPU machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from nodes.mlcm import students, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nodes.mlcm.gpu_run", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--minilm", default=None)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    extra = [x for k, v in (("--steps", args.steps), ("--batch", args.batch)) if v is not None for x in (k, str(v))]
    students.main(["--out", str(args.out), "--seconds", str(args.seconds), "--device", args.device, *extra,
                   *(["--minilm", args.minilm] if args.minilm else [])])
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    nets = table.load_nets(args.device, dtype, args.out)
    latents, cells = table.generate(args.device, nets, table._encoder(args.minilm, args.device), args.n)
    save_file(latents, str(args.out / "cells.safetensors"))
    info = {"device": table._device_name(args.device), "n": args.n, "cells": cells,
            "torch": torch.__version__, "seconds_total": time.perf_counter() - t0}
    (args.out / "cells.json").write_text(json.dumps(info, indent=1))
    logging.getLogger("fewstep.mlcm").info("gpu_run done in %.0fs", info["seconds_total"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
