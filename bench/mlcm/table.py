"""The miniature of the MLCM / SLAM tables on the built-in teacher (one command).

    python -m fewstep.bench.mlcm.table --students fewstep/nodes/mlcm/weights --out table.json      # fewstep bench distill

For 1, 2, 4, 8 steps: teacher DDIM, teacher DPM-Solver++(2M) (both CFG 5), LCM, MLCM stage 1, MLCM stage 2,
SLAM (students sample without CFG, guidance is distilled in); the teacher at 50 DDIM steps is the reference.
Columns: FD-EffNet against real renders of the held-out scenes, attribute accuracy (zoo probe), scorer reward
(zoo image-text scorer, cosine), and batch-1 latency in ms per image (sampling + VAE decode).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewstep.nodes.core.train.consistency import lcm_timesteps, milestone_timesteps
from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder

log = logging.getLogger("fewstep.mlcm.table")

CFG = 5.0
STEPS = (1, 2, 4, 8)
STUDENT_FILES = {"LCM": "fewstep-lcm-student.safetensors", "MLCM stage 1": "fewstep-mlcm-stage1-student.safetensors",
                 "MLCM stage 2": "fewstep-mlcm-student.safetensors", "SLAM": "fewstep-slam-student.safetensors",
                 # ours, an ablation (not shipped): SLAM with a quarter of each batch at γ = 1 (SLAMLoss.gamma_one)
                 "SLAM γ=1 share": "fewstep-slam-g1-student.safetensors"}
STUDENT_TIMESTEPS: dict[str, Callable[[int], list[int]]] = {
    "LCM": lcm_timesteps, "MLCM stage 1": milestone_timesteps, "MLCM stage 2": milestone_timesteps,
    "SLAM": lcm_timesteps, "SLAM γ=1 share": lcm_timesteps}


def core_schedule():
    from fewstep.nodes.core.denoiser import DiscreteVPSchedule
    from fewstep.nodes.zoo.models import SCHEDULE

    return DiscreteVPSchedule.from_config(**SCHEDULE)


def unet_denoiser(unet: torch.nn.Module, schedule: Any):
    """A core Denoiser over a diffusers UNet; cond = {"context": token states [B, 77, 384]}."""
    from fewstep.nodes.core.denoiser import Denoiser

    dtype = next(unet.parameters()).dtype

    def model_fn(x_in, timestep, cond):
        return unet(x_in.to(dtype), timestep, encoder_hidden_states=cond["context"].to(dtype)).sample.float()

    return Denoiser(model_fn, "eps", schedule)


def trailing_timesteps(steps: int) -> list[float]:
    """The teacher's N-step grid: 999, ..., 999/N (diffusers' "trailing" spacing), then σ = 0."""
    return torch.linspace(999, 0, steps + 1)[:-1].tolist()


def make_sampler(row: str, steps: int, unet: torch.nn.Module, schedule: Any) -> Callable[[torch.Tensor, dict, dict], torch.Tensor]:
    """``run(noise, cond, uncond) -> latents`` for one table cell."""
    from fewstep.nodes.core.guidance import BasicGuider, CFGGuider
    from fewstep.nodes.core.samplers import sample_ddim, sample_dpmpp_2m, sample_lcm
    from fewstep.nodes.core.schedules import from_timesteps

    den = unet_denoiser(unet, schedule)
    if row.startswith("teacher"):
        fn = sample_dpmpp_2m if "dpmpp" in row else sample_ddim
        sigmas = from_timesteps(schedule, trailing_timesteps(steps))
    else:
        fn, sigmas = sample_lcm, from_timesteps(schedule, STUDENT_TIMESTEPS[row](steps))

    def run(noise: torch.Tensor, cond: dict, uncond: dict, gen: torch.Generator | None = None) -> torch.Tensor:
        s = sigmas.to(noise.device)
        guider = CFGGuider(den, cond, uncond, CFG) if row.startswith("teacher") else BasicGuider(den, cond)
        x = noise * (s[0] ** 2 + 1).sqrt()            # pure noise in the DDPM space: x_vp = noise
        return fn(guider, x, s, generator=gen)

    return run


def frechet(mu1: torch.Tensor, c1_sqrt: torch.Tensor, tr1: torch.Tensor, feats: torch.Tensor) -> float:
    """FD = |μ1-μ2|² + tr C1 + tr C2 - 2 tr sqrt(√C1 C2 √C1), with √C1 precomputed (float64)."""
    f = feats.double()
    mu2, c2 = f.mean(0), torch.cov(f.T)
    inner = torch.linalg.eigvalsh(c1_sqrt @ c2 @ c1_sqrt).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + tr1 + c2.trace() - 2 * inner)


def reference_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    f = feats.double()
    c = torch.cov(f.T)
    vals, vecs = torch.linalg.eigh(c)
    return f.mean(0), vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T, c.trace()


class Judge:
    """The metric networks: EfficientNet-Lite0 features, the attribute probe and the scorer."""

    def __init__(self, device: str, effnet_path: str | None, encoder: Any) -> None:
        from fewstep.nodes.zoo.builtin import SCORER_FILE, Scorer, _load, load_probe
        from fewstep.nodes.zoo.effnet import load_efficientnet_lite0
        from fewstep.nodes.zoo.models import ScorerHeads

        self.effnet = load_efficientnet_lite0(effnet_path, device=device)
        self.probe = load_probe(device)
        state, cfg = _load(SCORER_FILE, None)
        heads = ScorerHeads(**cfg["heads"])
        heads.load_state_dict({k: v.float() for k, v in state.items()})
        self.scorer = Scorer(heads.to(device), self.effnet, encoder)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        from fewstep.nodes.zoo.effnet import features

        return torch.cat([features(self.effnet, images[i:i + 250]).float() for i in range(0, len(images), 250)])

    @torch.no_grad()
    def text_embeds(self, prompts: list[str]) -> torch.Tensor:
        """The scorer's prompt embeddings [N, 256], computed once per prompt list (every cell shares it)."""
        key = tuple(prompts)
        if getattr(self, "_text_key", None) != key:
            self._text = torch.cat([self.scorer.text_embeds(prompts[i:i + 250]) for i in range(0, len(prompts), 250)])
            self._text_key = key
        return self._text

    @torch.no_grad()
    def judge(self, images: torch.Tensor, scenes: list, prompts: list[str], ref: tuple) -> dict[str, float]:
        """FD-EffNet, attribute accuracy, reward; one EffNet pass serves FD (pooled) and the scorer (heads)."""
        from fewstep.nodes.zoo.effnet import feature_map

        if images.shape[0] != len(prompts):
            raise ValueError(f"Judge.judge: {images.shape[0]} images but {len(prompts)} prompts")
        maps = [feature_map(self.effnet, images[i:i + 250]).float() for i in range(0, len(images), 250)]
        feats = torch.cat([m.mean(dim=(2, 3)) for m in maps])
        image_emb = torch.cat([self.scorer.heads.image(m) for m in maps])
        reward = (image_emb * self.text_embeds(prompts)).sum(-1)
        return {"fd_effnet": frechet(*ref, feats),
                "attribute_accuracy": self.probe.attribute_accuracy(images, scenes),
                "reward": float(reward.mean())}


def decode(vae: torch.nn.Module, scale: float, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents [B, 4, 16, 16] -> IMAGE [B, 64, 64, 3] in 0..1."""
    dtype = next(vae.parameters()).dtype
    out = torch.cat([vae.decode((latents[i:i + 250] / scale).to(dtype)).sample.float() for i in range(0, len(latents), 250)])
    return ((out + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)


def latency_ms(run: Callable, vae: torch.nn.Module, scale: float, cond: dict, uncond: dict, device: str,
               repeats: int = 5) -> float:
    """Median wall time of one image (batch 1): sampling + decode, after 2 warm-up runs."""
    noise = torch.randn(1, 4, 16, 16, device=device, generator=torch.Generator(device).manual_seed(0))
    times = []
    for i in range(repeats + 2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        decode(vae, scale, run(noise, cond, uncond))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def rows(students: dict[str, Any]) -> list[tuple[str, int]]:
    cells = [("teacher ddim", 50)]
    for name in ["teacher ddim", "teacher dpmpp_2m", *[r for r in STUDENT_FILES if r in students]]:
        cells += [(name, s) for s in STEPS]
    return cells


def eval_prompts(n: int) -> tuple[list, list[str]]:
    """The first ``n`` held-out scenes (disjoint captions from training) and their captions."""
    from fewstep.nodes.zoo import data

    scenes = data.make_split("heldout", n, seed=0)
    return scenes, [data.caption(s) for s in scenes]


def load_nets(device: str, dtype: torch.dtype, students_dir: Path) -> dict[str, torch.nn.Module]:
    from fewstep.nodes.core.train.builtin import load_student, teacher_unet

    nets = {"teacher": teacher_unet(device, dtype)}
    return nets | {name: load_student(students_dir / f, device, dtype) for name, f in STUDENT_FILES.items()
                   if (students_dir / f).is_file()}


@torch.no_grad()
def generate(device: str, nets: dict[str, torch.nn.Module], enc: Any, n: int, with_latents: bool = True
             ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Latents of every cell for the ``n`` held-out prompts (fixed noise, seeded re-noising) + latency rows."""
    from fewstep.nodes.zoo.builtin import load_vae

    vae, scale = load_vae(device, next(nets["teacher"].parameters()).dtype)
    schedule = core_schedule()
    _, prompts = eval_prompts(n)
    cond = {"context": torch.cat([enc.encode_tokens(prompts[i:i + 250])[0] for i in range(0, n, 250)])}
    uncond = {"context": enc.encode_tokens([""])[0]}
    noise = torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(1234)).to(device)
    latents, cells = {}, []
    for row, steps in rows(nets):
        run = make_sampler(row, steps, nets["teacher" if row.startswith("teacher") else row], schedule)
        if with_latents:
            gen = torch.Generator(device).manual_seed(7)
            latents[f"{row}|{steps}"] = torch.cat([
                run(noise[i:i + 250], {"context": cond["context"][i:i + 250]}, uncond, gen)
                for i in range(0, n, 250)]).half().cpu()
        ms = latency_ms(run, vae, scale, {"context": cond["context"][:1]}, uncond, device)
        cells.append({"method": row, "steps": steps, "ms_per_image": ms})
    return latents, cells


@torch.no_grad()
def judge_latents(latents: dict[str, torch.Tensor], cells: list[dict[str, Any]], device: str, n: int,
                  effnet: str | None = None, minilm: str | None = None,
                  extra: Callable[[torch.Tensor, list[str], Judge], dict[str, float]] | None = None,
                  ) -> list[dict[str, Any]]:
    """FD-EffNet, attribute accuracy and reward of every cell's latents (runs on CPU too).

    ``extra(images [n, H, W, 3], prompts, judge)``: a pack's own columns for each cell (e.g. R0's rewards).
    """
    from fewstep.nodes.zoo import data
    from fewstep.nodes.zoo.builtin import load_vae

    enc = MiniLMTextEncoder.load(minilm, device)
    vae, scale = load_vae(device, torch.float32)
    judge = Judge(device, effnet, enc)
    scenes, prompts = eval_prompts(n)
    real = torch.stack([torch.from_numpy(np.asarray(data.render(s), dtype=np.float32) / 255.0)
                        for s in scenes]).to(device)
    ref = reference_stats(judge.features(real))
    for i, cell in enumerate(cells):
        lat = latents[f"{cell['method']}|{cell['steps']}"][:n].float().to(device)
        images = decode(vae, scale, lat)
        cell |= judge.judge(images, scenes, prompts, ref)
        if extra is not None:
            cell |= extra(images, prompts, judge)
        log.info("judged %d/%d: %s", i + 1, len(cells), cell)   # ~1 min per cell of 300 on a busy 2-core CPU
    return cells



def run_table(device: str, students_dir: Path, n: int, effnet: str | None, minilm: str | None,
              timing_only: bool = False) -> dict[str, Any]:
    """Every cell of the table on one machine (quality on ``n`` held-out prompts unless ``timing_only``)."""
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    nets = load_nets(device, dtype, students_dir)
    latents, cells = generate(device, nets, MiniLMTextEncoder.load(minilm, device), n, with_latents=not timing_only)
    if not timing_only:
        cells = judge_latents(latents, cells, device, n, effnet, minilm)
    return {"device": device_name(device), "n": n, "cfg": CFG, "cells": cells}


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


def markdown(table: dict[str, Any], cpu: dict[str, Any] | None = None) -> str:
    """The README table: one line per (method, steps)."""
    cpu_ms = {(c["method"], c["steps"]): c["ms_per_image"] for c in (cpu or {}).get("cells", [])}
    lines = ["| method | steps | FD-EffNet ↓ | attribute acc. ↑ | reward ↑ | ms/img GPU | ms/img CPU |",
             "|---|---|---|---|---|---|---|"]
    for c in table["cells"]:
        cpu_v = cpu_ms.get((c["method"], c["steps"]))
        lines.append(f"| {c['method']} | {c['steps']} | {c.get('fd_effnet', float('nan')):.2f} | "
                     f"{c.get('attribute_accuracy', float('nan')):.3f} | {c.get('reward', float('nan')):.3f} | "
                     f"{c['ms_per_image']:.1f} | {'' if cpu_v is None else f'{cpu_v:.0f}'} |")
    return "\n".join(lines)


def add_table_arguments(p: argparse.ArgumentParser, students: Path, n: int) -> None:
    """The options every distillation table CLI shares: students folder, output, prompts per cell, device,
    the judge's networks and judge-only mode on latents generated elsewhere."""
    p.add_argument("--students", type=Path, default=students)
    p.add_argument("--out", type=Path, default=None, help="write the JSON here")
    p.add_argument("--n", type=int, default=n, help="held-out prompts per cell")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--effnet", default=None, help="EfficientNet-Lite0 fp16 safetensors (default: PyPI package)")
    p.add_argument("--minilm", default=None, help="pruned MiniLM folder (default: PyPI package)")
    p.add_argument("--latents", type=Path, default=None,
                   help="judge latents generated elsewhere (gpu_run's cells.safetensors + cells.json beside it)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.mlcm.table", description=__doc__.split("\n")[0])
    from fewstep.nodes.mlcm.students import weights_dir

    add_table_arguments(p, weights_dir(), n=500)
    p.add_argument("--timing-only", action="store_true", help="latency column only (e.g. the CPU column)")
    p.add_argument("--cpu-json", type=Path, default=None, help="a --timing-only CPU run to merge into the markdown")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.latents:
        from safetensors.torch import load_file

        gpu = json.loads(args.latents.with_suffix(".json").read_text())
        cells = judge_latents(load_file(str(args.latents)), gpu["cells"], args.device, gpu["n"], args.effnet,
                              args.minilm)
        table = {"device": gpu["device"], "n": gpu["n"], "cfg": CFG, "cells": cells}
    else:
        table = run_table(args.device, args.students, args.n, args.effnet, args.minilm, args.timing_only)
    if args.out:
        args.out.write_text(json.dumps(table, indent=1))
    cpu = json.loads(args.cpu_json.read_text()) if args.cpu_json else None
    print(markdown(table, cpu))  # noqa: T201 — the command's output is the table
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
