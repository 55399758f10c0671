"""Training recipe of the shipped PRD generator (one command, CPU-sized; the GPU run is
``bench/prd/gpu_run.sh``):

    python -m fewstep.nodes.prd.recipe --seconds 320   # PRD distillation of the triplane generator, ~6 min

It distils from the zoo's built-in multi-view teacher (``--teacher``, default the zoo's ``weights/``; trained
by ``python -m fewstep.nodes.zoo.multiview.train``) and writes the generator, its JSON config and a report
into ``--out`` (default: the pack's ``weights/``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fewstep.nodes.prd.bundle import weights_dir
from fewstep.nodes.prd.train import stage_generator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=weights_dir())
    parser.add_argument("--teacher", type=Path, default=None,
                        help="folder of the multi-view teacher and its caption probe (default: the zoo's weights)")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--steps", type=int, default=280, help="PRD iterations (also set the t_min ramp)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = stage_generator(args.out, args.seconds, args.steps, teacher_root=args.teacher, device=args.device)
    print(json.dumps(report, indent=1))  # noqa: T201


if __name__ == "__main__":
    main()
