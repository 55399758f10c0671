"""Model cards of the shipped R0 students, from the GPU run's arm reports and the judged table.

    python -m fewstep.bench.r0.cards DIR/students bench/r0/results/table.json fewstep/nodes/r0/weights
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fewstep.bench.r0.table import ARM_LABELS
from fewstep.nodes.r0.students import student_file


def card(name: str, report: dict, cells: list[dict], device: str) -> str:
    cfg = report["config"]
    rewards = ", ".join(f"{r} × {w}" for r, w in cfg["rewards"])
    regs = [f"weight drift λ = {cfg['weight_reg']:g}" if cfg["weight_reg"] > 0 else "no weight regulariser",
            "random η ~ U[0,1]" if cfg["random_eta"] else f"fixed η = {cfg['eta']:g}",
            "per-reward gradient normalisation" if cfg["normalize_grads"] else "raw reward gradients"]
    if cfg["intermediate_weight"] > 0:
        regs.append(f"R0+ intermediate x̂0 rewards × {cfg['intermediate_weight']:g}")
    file = student_file(name)
    lines = [f"# {file[:-len('.safetensors')]}", "",
             f"{ARM_LABELS[name]}: an R0 generator (regularised reward maximisation, Luo et al. 2025) of "
             "`fewstep-tiny-teacher.safetensors` (7.6 M-parameter UNet), trained on rewards only — no images, no "
             "distillation loss.", "", "## Format",
             f"LoRA (peft, rank {cfg['lora_rank']}, TLCM's target modules) in fp16; metadata `fewstep` holds the "
             "recipe. `nodes.r0.students.load_student` merges it into a plain UNet; `R0StudentLoader` does this in a "
             "graph and also outputs the SAMPLER (core `ddim`, η = 0), the SIGMAS (999, 749, 499, 249) and the CFG "
             f"scale ({cfg['guidance']:g}) it was trained with.", "", "## Training",
             f"Rewards: {rewards}. Regularisers: {'; '.join(regs)}. AdamW lr {cfg['lr']:g}, batch "
             f"{cfg['batch_size']}, grad clip {cfg['grad_clip']:g}, back-propagation through all "
             f"{cfg['sampler_steps']} sampler steps and the VAE decoder, bf16 autocast, seed {cfg['seed']}.",
             f"**{report['steps']} optimizer steps in {report['train_seconds']:.0f} s** on {device} (time-capped, "
             "sharing the GPU with the other arms and packs). Rewards of the training batches, first step → mean "
             f"of the last 20: {_fmt(report['first'])} → {_fmt(report['last_20'])}.", "",
             "Command: the GPU job of `fewstep/nodes/r0/README.md` (\"The table\"; this arm ran with `--reward-chunk "
             f"{cfg['reward_chunk']}`), or alone: `python -m fewstep.bench.r0.students --arm {name} --out DIR --seconds S "
             "--batch 128 --minilm MINILM_DIR --effnet EFFNET_FILE`.", "",
             "## Evaluation (300 held-out prompts, seed 1234 noise, η = 0)",
             "| row | steps | FD-EffNet | attribute acc. | scorer | probe | saturation | ms/img (batch 1, GPU shared with ~10 training jobs) |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if c["method"] in (name, "teacher ddim"):
            lines.append(f"| {ARM_LABELS.get(c['method'], c['method'])} | {c['steps']} | {c['fd_effnet']:.2f} | "
                         f"{c['attribute_accuracy']:.3f} | {c['reward']:.3f} | {c['probe_reward']:.3f} | "
                         f"{c['saturation']:.3f} | {c['ms_per_image']:.1f} |")
    lines += ["", "## Licenses", "GPL-3.0-or-later, like the project. Teacher: ours (see its card); text encoder "
              "all-MiniLM-L6-v2 (Apache-2.0), scorer and metrics on EfficientNet-Lite0 (Apache-2.0)."]
    return "\n".join(lines) + "\n"


def _fmt(numbers: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in numbers.items())


def main(argv: list[str]) -> int:
    reports, table, out = Path(argv[0]), json.loads(Path(argv[1]).read_text()), Path(argv[2])
    for path in sorted(reports.glob("*-report.json")):
        name = path.name[: -len("-report.json")]
        if (out / student_file(name)).is_file():
            text = card(name, json.loads(path.read_text()), table["cells"], table["device"])
            (out / student_file(name).replace(".safetensors", ".md")).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
