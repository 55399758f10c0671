"""Model cards of the shipped TDM students, written from the GPU run's report and the judged table.

    python -m fewstep.bench.tdm.cards bench/tdm/results/students-report.json bench/tdm/results/table.json fewstep/nodes/tdm/weights
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fewstep.bench.tdm.students import FILES
from fewstep.bench.tdm.table import ROW_NAMES

WHAT = {"tdm_unify": "TDM-unify: the sampling-steps-aware variant (K ~ U{1..4} per training step, K a one-hot "
                     "condition of student and fake score), one student for 1, 2 and 4 steps",
        "tdm": "TDM with a fixed K = 4 (the paper's main setting): 4 deterministic steps at t = 899, 674, 449, 224",
        "dmd": "K = 1: one-step distribution matching (TDM's loss with a single interval; the paper's K = 1 ablation)"}


def card(name: str, stats: dict, cells: list[dict]) -> str:
    cfg = stats["config"]
    file = FILES[name].removesuffix(".safetensors")
    lines = [f"# {file}", "", f"{WHAT[name]}; student of `fewstep-tiny-teacher.safetensors` (7.6 M-parameter UNet).",
             "", "## Format",
             f"LoRA (peft, rank {cfg['lora_rank']}, MLCM's target modules) in fp16"
             + (" plus `override.time_embedding.cond_proj.weight` (the step-count input, [64, 8] fp32)"
                if cfg["unify"] else "")
             + ". `nodes.tdm.students.load_student` merges it into a UNet of the teacher's architecture"
             + (" with `time_cond_proj_dim = 8`; `nodes.tdm.steps.fold_steps` folds one K out into a plain UNet"
                if cfg["unify"] else "") + "; `TDMStudentLoader` + `TDMScheduler` do this in a graph.", "",
             "Sampling: `TDMScheduler` (t_k = k·900/K − 1) + `KSamplerSelect(ddim)` (deterministic, the student's "
             f"own ε̂) + `BasicGuider` (no CFG: scale {cfg['guidance']} is distilled in).", "", "## Training",
             f"One H200 shared with two other jobs, bf16 autocast, batch {cfg['batch_size']}, fake score = full copy "
             f"of the teacher at lr {cfg['lr']}, student lr {cfg['lr'] * cfg['generator_lr_ratio']:g}, grad norm "
             f"{cfg['grad_clip']} per network, CFG {cfg['guidance']}, T' = {cfg['total_steps']}, pseudo-Huber c "
             f"{cfg['huber_c']}, separate intervals {cfg['separate']}, seed {cfg['seed']}.",
             f"**{stats['steps']} optimizer steps in {stats['seconds']:.0f} s** (time-capped). This is a very short run: "
             "see the table and the README for what it does and does not reach.", "",
             "Command: `python -m fewstep.bench.tdm.gpu_run --out DIR --minilm MINILM_DIR --seconds 260 --n 300` "
             f"(or `python -m fewstep.bench.tdm.students --out DIR --only {name}`).", "",
             "## Evaluation (300 held-out prompts, noise seed 1234)",
             "| steps | FD-EffNet | attribute acc. | reward | ms/img (H200, batch 1) |", "|---|---|---|---|---|"]
    for c in cells:
        if c["method"] == ROW_NAMES[name]:
            lines.append(f"| {c['steps']} | {c['fd_effnet']:.2f} | {c['attribute_accuracy']:.3f} | "
                         f"{c['reward']:.3f} | {c['ms_per_image']:.1f} |")
    lines += ["", "## Licenses", "GPL-3.0-or-later, like the project. Teacher: ours (see its card); text encoder "
              "all-MiniLM-L6-v2 (Apache-2.0), metrics on EfficientNet-Lite0 (Apache-2.0)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    report, table, out = json.loads(Path(argv[0]).read_text()), json.loads(Path(argv[1]).read_text()), Path(argv[2])
    for name, stats in report.items():
        (out / f"{FILES[name].removesuffix('.safetensors')}.md").write_text(card(name, stats, table["cells"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
