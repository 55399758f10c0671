"""The miniature of R0's table and ablation on the built-in teacher (latents from the GPU, judged anywhere).

    python -m fewstep.bench.r0.table --latents DIR/cells.safetensors --out bench/r0/results/table.json

Rows: the teacher's DDIM at 25 steps (the paper's "base model, 25 steps") and at 4 steps, both CFG 5; the
R0 students at 4 steps (η = 0, their CFG): the shipped ``r0`` (scorer + probe, every regulariser), ``r0plus``
(+ intermediate supervision) and the ablation arms trained on scorer + probe + the hackable saturation
reward — ``none``, ``+ weight reg``, ``+ random η``, ``+ grad-norm = full``. Columns: FD-EffNet against real
renders of the held-out scenes, attribute accuracy (zoo probe), scorer reward (cosine), probe reward (scene
log-probability per cell), saturation, and batch-1 latency on the GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("fewstep.r0.table")

TEACHER_CFG = 5.0
TEACHER_ROWS: tuple[tuple[str, int], ...] = (("teacher ddim", 25), ("teacher ddim", 4))
ARM_LABELS: dict[str, str] = {"r0": "R0 (scorer+probe, all regularisers)", "r0plus": "R0+ (+ intermediate x̂0 rewards)",
                              "none": "hack arm: no regulariser", "wreg": "hack arm: + weight reg",
                              "wreg_eta": "hack arm: + random η", "full": "hack arm: + grad-norm = full R0"}


def r0_runner(unet: torch.nn.Module, schedule: Any, meta: dict[str, Any]):
    """``run(noise, cond, uncond, gen) -> latents`` of a student: core ``sample_ddim`` with its fixed η on its
    timesteps, CFG at its training scale (so a graph with core nodes reproduces it exactly)."""
    from fewstep.bench.mlcm.table import unet_denoiser
    from fewstep.nodes.core.guidance import BasicGuider, CFGGuider
    from fewstep.nodes.core.samplers import sample_ddim
    from fewstep.nodes.core.schedules import from_timesteps

    den = unet_denoiser(unet, schedule)
    sigmas = from_timesteps(schedule, meta["timesteps"])
    guidance, eta = float(meta["guidance"]), float(meta["eta"])

    def run(noise: torch.Tensor, cond: dict, uncond: dict, gen: torch.Generator | None = None) -> torch.Tensor:
        s = sigmas.to(noise.device)
        guider = CFGGuider(den, cond, uncond, guidance) if guidance != 1.0 else BasicGuider(den, cond)
        return sample_ddim(guider, noise * (s[0] ** 2 + 1).sqrt(), s, generator=gen, eta=eta)

    return run


@torch.no_grad()
def generate_rows(device: str, rows: list[tuple[str, int, Any, Any]], enc: Any, n: int
                  ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Latents of each (label, steps, unet, run-maker) row for the first ``n`` held-out prompts + batch-1 latency."""
    from fewstep.bench.mlcm.table import core_schedule, eval_prompts, latency_ms
    from fewstep.nodes.zoo.builtin import load_vae

    dtype = next(rows[0][2].parameters()).dtype
    vae, scale = load_vae(device, dtype)
    schedule = core_schedule()
    _, prompts = eval_prompts(n)
    cond = {"context": torch.cat([enc.encode_tokens(prompts[i:i + 250])[0] for i in range(0, n, 250)])}
    uncond = {"context": enc.encode_tokens([""])[0]}
    noise = torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(1234)).to(device)
    latents, cells = {}, []
    for label, steps, unet, make in rows:
        run = make(unet, schedule)
        gen = torch.Generator(device).manual_seed(7)
        latents[f"{label}|{steps}"] = torch.cat([
            run(noise[i:i + 250], {"context": cond["context"][i:i + 250]}, uncond, gen)
            for i in range(0, n, 250)]).half().cpu()
        ms = latency_ms(run, vae, scale, {"context": cond["context"][:1]}, uncond, device)
        cells.append({"method": label, "steps": steps, "ms_per_image": ms})
        log.info("generated %s|%d (%.1f ms/img)", label, steps, ms)
    return latents, cells


def teacher_rows(unet: torch.nn.Module) -> list[tuple[str, int, Any, Any]]:
    from fewstep.bench.mlcm.table import make_sampler

    return [(label, steps, unet, lambda u, sch, s=steps: make_sampler("teacher ddim", s, u, sch))
            for label, steps in TEACHER_ROWS]


def student_rows(students_dir: Path, device: str, dtype: torch.dtype) -> list[tuple[str, int, Any, Any]]:
    """One row per student file found (arm order of ARM_LABELS)."""
    from fewstep.nodes.r0.students import load_student, student_file, student_meta

    rows = []
    for name in ARM_LABELS:
        path = students_dir / student_file(name)
        if path.is_file():
            meta = student_meta(path)
            rows.append((name, len(meta["timesteps"]), load_student(path, device, dtype),
                         lambda u, sch, m=meta: r0_runner(u, sch, m)))
    return rows


def judge_cells(latents: dict[str, torch.Tensor], cells: list[dict[str, Any]], device: str, n: int,
                effnet: str | None = None, minilm: str | None = None) -> list[dict[str, Any]]:
    """fewstep.bench.mlcm.table's judges (FD-EffNet, attribute accuracy, scorer reward) + probe reward + saturation."""
    from fewstep.bench.mlcm.table import judge_latents
    from fewstep.nodes.core.rewards import ProbeReward, SaturationReward

    saturation = SaturationReward()

    def r0_columns(images: torch.Tensor, prompts: list[str], judge: Any) -> dict[str, float]:
        probe = ProbeReward(judge.probe)
        return {"probe_reward": float(torch.cat([probe(images[j:j + 250], prompts[j:j + 250])
                                                 for j in range(0, len(prompts), 250)]).mean()),
                "saturation": float(saturation(images, prompts).mean())}

    return judge_latents(latents, cells, device, n, effnet, minilm, extra=r0_columns)


@torch.no_grad()
def sample_grid(latents: dict[str, torch.Tensor], cells: list[dict[str, Any]], path: Path, k: int = 8) -> None:
    """A PNG with one row per cell: its first ``k`` held-out samples (64x64 each), decoded on CPU."""
    import numpy as np
    from PIL import Image

    from fewstep.bench.mlcm.table import decode
    from fewstep.nodes.zoo.builtin import load_vae

    vae, scale = load_vae("cpu", torch.float32)
    rows = [decode(vae, scale, latents[f"{c['method']}|{c['steps']}"][:k].float()) for c in cells]   # [k,64,64,3]
    grid = torch.cat([torch.cat(list(r), dim=1) for r in rows], dim=0)                               # [64n, 64k, 3]
    Image.fromarray((grid.numpy() * 255).round().astype(np.uint8)).save(path)


def markdown(table: dict[str, Any], reports: dict[str, Any] | None = None) -> str:
    """The README table: one line per cell (+ training steps of each student when the reports are given)."""
    reports = reports or {}
    lines = ["| row | steps | FD-EffNet ↓ | attribute acc. ↑ | scorer reward ↑ | probe reward ↑ | saturation | "
             "ms/img GPU | train steps |", "|---|---|---|---|---|---|---|---|---|"]
    for c in table["cells"]:
        label = ARM_LABELS.get(c["method"], c["method"])
        trained = reports.get(c["method"], {}).get("steps", "")
        lines.append(f"| {label} | {c['steps']} | {c['fd_effnet']:.2f} | {c['attribute_accuracy']:.3f} | "
                     f"{c['reward']:.3f} | {c['probe_reward']:.3f} | {c['saturation']:.3f} | "
                     f"{c['ms_per_image']:.1f} | {trained} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.r0.table", description=__doc__.split("\n")[0])
    p.add_argument("--latents", required=True, type=Path, nargs="+",
                   help="gpu_run's cells.safetensors (cells.json beside it); several runs' files are merged")
    p.add_argument("--out", type=Path, default=None, help="write the judged JSON here")
    p.add_argument("--reports", type=Path, nargs="*", default=(), help="folders of the arms' <arm>-report.json")
    p.add_argument("--device", default="cpu")
    p.add_argument("--effnet", default=None)
    p.add_argument("--minilm", default=None)
    p.add_argument("--grid", type=Path, default=None, help="also save a PNG of each row's first 8 samples")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from safetensors.torch import load_file

    runs = [json.loads(path.with_suffix(".json").read_text()) for path in args.latents]
    latents = {k: v for path in args.latents for k, v in load_file(str(path)).items()}
    if len({run["n"] for run in runs}) != 1:
        raise ValueError(f"--latents: the runs used different prompt counts {[run['n'] for run in runs]}")
    if args.grid:
        sample_grid(latents, [c for run in runs for c in run["cells"]], args.grid)
    cells = judge_cells(latents, [c for run in runs for c in run["cells"]], args.device, runs[0]["n"], args.effnet,
                        args.minilm)
    table = {"device": runs[0]["device"], "n": runs[0]["n"], "cells": cells}
    if args.out:
        args.out.write_text(json.dumps(table, indent=1))
    reports = {p.name[: -len("-report.json")]: json.loads(p.read_text())
               for folder in args.reports for p in folder.glob("*-report.json")}
    print(markdown(table, reports))  # noqa: T201 — the command's output is the table
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
