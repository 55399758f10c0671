"""``fewstep eval``: a grid of sampler x steps x guidance on N held-out prompts of the built-in teacher.

Prints a table (attribute accuracy by the probe, scorer similarity, FD-EffNet against N real held-out
renders) and writes every number to JSON. Deterministic: prompts from ``make_split("heldout", N, seed)``,
noise from ``--seed`` (ComfyUI's CPU-generator convention), so each row reproduces from the printed command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fewstep eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--samplers", default="ddim,euler,dpmpp_2m,lcm", help="comma-separated sampler names")
    p.add_argument("--steps", default="1,2,4,8,50", help="comma-separated step counts")
    p.add_argument("--cfg", default="5.0", help="comma-separated guidance scales")
    p.add_argument("--scheduler", default="sgm_uniform", help="schedule (sgm_uniform = trailing timesteps)")
    p.add_argument("--n", type=int, default=64, help="held-out prompts (and reference renders)")
    p.add_argument("--seed", type=int, default=0, help="prompt split seed and noise seed")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--no-fd", action="store_true", help="skip FD-EffNet")
    p.add_argument("--out", type=Path, default=Path("eval.json"), help="JSON results file")
    return p


def _generate(model: Any, encoder: Any, vae: Any, prompts: list[str], sampler: str, steps: int, cfg: float,
              scheduler: str, seed: int, batch: int) -> Any:
    import torch

    from fewstep.nodes.core import sampling
    from fewstep.nodes.core.samplers import get_sampler
    from fewstep.nodes.core.schedules import calculate_sigmas

    sigmas = calculate_sigmas(model.schedule, scheduler, steps)
    uncond, _ = encoder.encode([""])
    images = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        states, _ = encoder.encode(chunk)
        guider = sampling.GuiderSpec(model, [[states.float(), {}]], [[uncond.float(), {}]], cfg)
        latent = {"samples": torch.zeros(len(chunk), 4, 16, 16)}
        out, _ = sampling.run(guider, get_sampler(sampler), sigmas, latent, sampling.RandomNoiseSpec(seed + start))
        images.append(vae.decode(out["samples"]))
    return torch.cat(images)


def run_grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (sampler, steps, cfg) row with its metrics."""
    from fewstep.nodes.core import metrics
    from fewstep.nodes.core.loaders import _load_builtin, list_builtin
    from fewstep.nodes.zoo.builtin import load_probe, load_scorer
    from fewstep.nodes.zoo.effnet import load_efficientnet_lite0

    model, clip, vae = _load_builtin(list_builtin()[0])
    reference, prompts = metrics.reference_images(args.n, seed=args.seed)
    probe, scorer = load_probe(), load_scorer()
    effnet = None if args.no_fd else load_efficientnet_lite0()
    ref_feats = None if args.no_fd else metrics.effnet_features(reference, effnet)
    rows = []
    for sampler in args.samplers.split(","):
        for steps in (int(s) for s in args.steps.split(",")):
            for cfg in (float(c) for c in args.cfg.split(",")):
                t0 = time.perf_counter()
                images = _generate(model, clip.encoders[0], vae, prompts, sampler, steps, cfg, args.scheduler,
                                   args.seed, args.batch)
                row = {"sampler": sampler, "steps": steps, "cfg": cfg, "seconds": time.perf_counter() - t0,
                       **metrics.attribute_alignment(images, prompts, probe),
                       "scorer_similarity": metrics.scorer_similarity(images, prompts, scorer)}
                if effnet is not None:
                    row["fd_effnet"] = metrics.frechet_distance(metrics.effnet_features(images, effnet), ref_feats)
                rows.append(row)
                _print_row(row)
    return rows


def _print_row(row: dict[str, Any]) -> None:
    fd = f"{row['fd_effnet']:9.2f}" if "fd_effnet" in row else "        -"
    sys.stdout.write(f"| {row['sampler']:<15} | {row['steps']:>5} | {row['cfg']:>4.1f} | {row['attribute_accuracy']:.3f} "
                     f"| {row['colour_accuracy']:.3f} | {row['shape_accuracy']:.3f} | {row['count_accuracy']:.3f} "
                     f"| {row['scorer_similarity']:.3f} | {fd} | {row['seconds']:7.1f} |\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    """Entry point of ``fewstep eval``; returns the exit code."""
    # `fewstep eval` hands over argparse.REMAINDER, which cannot start with an option: accept
    # `fewstep eval grid --n 64 ...` (and a leading "--").
    argv = list(argv)
    if argv[:1] in (["grid"], ["--"]):
        argv = argv[1:]
    args = _parser().parse_args(argv)
    command = "fewstep eval grid " + " ".join(argv)
    sys.stdout.write(f"{command}\n| sampler         | steps |  cfg | attr  | colour| shape | count | scorer| FD-EffNet"
                     f" | seconds |\n|---|---|---|---|---|---|---|---|---|---|\n")
    rows = run_grid(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "scheduler": args.scheduler, "n": args.n, "rows": rows},
                                   indent=1))
    sys.stdout.write(f"wrote {args.out}\n")
    return 0
