"""The PSO table: judge the GPU job's latents (anywhere, CPU is fine) and print the README's markdown.

    python -m fewstep.bench.pso.table --latents DIR/cells.safetensors [--minilm .carry/minilm] --out table.json

Rows: the MLCM student before PSO, online PSO and its naive baseline (denoising loss on the pairs' winners), offline
PSO on the concept and its naive baseline (denoising loss on the target renders); 1, 2 and 4 steps each. Columns on
the held-out prompts (``nodes.mlcm.table``'s judges): FD-EffNet against real renders, attribute accuracy (zoo probe),
scorer reward (zoo scorer cosine, the online runs' training reward); on the concept prompt: probe attribute accuracy
and scorer reward of ``concept_n`` samples.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from fewstep.bench.mlcm import table as mlcm_table
from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder

log = logging.getLogger("fewstep.pso.table")


@torch.no_grad()
def judge_concept(latents: dict[str, torch.Tensor], cells: list[dict[str, Any]], caption: str, device: str,
                  effnet: str | None, minilm: str | None) -> None:
    """Adds ``concept_attribute_accuracy`` and ``concept_reward`` to every cell (in place)."""
    from fewstep.nodes.zoo import data
    from fewstep.nodes.zoo.builtin import load_vae

    scene = data.parse_caption(caption)
    if scene is None:
        raise ValueError(f"concept caption {caption!r} is outside the procedural grammar")
    vae, scale = load_vae(device, torch.float32)
    judge = mlcm_table.Judge(device, effnet, MiniLMTextEncoder.load(minilm, device))
    for cell in cells:
        images = mlcm_table.decode(vae, scale, latents[f"concept|{cell['method']}|{cell['steps']}"].float().to(device))
        cell["concept_attribute_accuracy"] = judge.probe.attribute_accuracy(images, [scene] * len(images))
        cell["concept_reward"] = float(judge.scorer.score(images, [caption] * len(images)).mean())


def judge(latents_path: Path, device: str, effnet: str | None, minilm: str | None, n: int | None = None
          ) -> dict[str, Any]:
    """Every cell of the GPU job's ``cells.safetensors`` (+ ``cells.json`` beside it) judged on ``device``."""
    from safetensors.torch import load_file

    gpu = json.loads(latents_path.with_suffix(".json").read_text())
    latents = load_file(str(latents_path))
    n = min(n or gpu["n"], gpu["n"])
    cells = mlcm_table.judge_latents(latents, gpu["cells"], device, n, effnet, minilm)
    judge_concept(latents, cells, gpu["concept"], device, effnet, minilm)
    return {"device": gpu["device"], "n": n, "concept": gpu["concept"], "concept_n": gpu["concept_n"],
            "cells": cells, "train": {k: {"steps": v["steps"], "seconds": v["seconds"]} for k, v in gpu["train"].items()}}


def markdown(table: dict[str, Any]) -> str:
    """The README table: one line per (method, steps)."""
    lines = ["| method | steps | FD-EffNet ↓ | attribute acc. ↑ | reward ↑ | concept attr. acc. ↑ | concept reward ↑ "
             "| ms/img GPU |", "|---|---|---|---|---|---|---|---|"]
    for c in table["cells"]:
        lines.append(f"| {c['method']} | {c['steps']} | {c['fd_effnet']:.2f} | {c['attribute_accuracy']:.3f} | "
                     f"{c['reward']:.3f} | {c['concept_attribute_accuracy']:.3f} | {c['concept_reward']:.3f} | "
                     f"{c['ms_per_image']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.pso.table", description=__doc__.split("\n")[0])
    p.add_argument("--latents", required=True, type=Path, help="gpu_run's cells.safetensors (cells.json beside it)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    p.add_argument("--n", type=int, default=None, help="judge only the first n held-out prompts")
    p.add_argument("--device", default="cpu")
    p.add_argument("--effnet", default=None, help="EfficientNet-Lite0 fp16 safetensors (default: PyPI package)")
    p.add_argument("--minilm", default=None, help="pruned MiniLM folder (default: PyPI package)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    table = judge(args.latents, args.device, args.effnet, args.minilm, args.n)
    if args.out:
        args.out.write_text(json.dumps(table, indent=1))
    print(markdown(table))  # noqa: T201 — the command's output is the table
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
