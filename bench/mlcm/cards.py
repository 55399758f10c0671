"""Model cards of the shipped students, written from the GPU run's report and the judged table.

    python -m fewstep.bench.mlcm.cards bench/mlcm/results/students-report.json TABLE.json fewstep/nodes/mlcm/weights
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LORA_RANK = 16          # nodes.mlcm.students.LORA_RANK (stage 2 trains the stage-1 adapters: its config says 0)

FILES = {"lcm": ("fewstep-lcm-student", "LCM"), "mlcm_stage1": ("fewstep-mlcm-stage1-student", "MLCM stage 1"),
         "mlcm": ("fewstep-mlcm-student", "MLCM stage 2"), "slam": ("fewstep-slam-student", "SLAM")}
WHAT = {"lcm": "plain LCM: multistep consistency distillation with one segment (MLCDLoss, M = 1), EMA target 0.95",
        "mlcm_stage1": "MLCM stage 1: MLCD over M = 8 segments, online stop-gradient target, data-free states",
        "mlcm": "MLCM stage 2: the stage-1 student refined by progressive consistency between milestones "
                "(q = 4 own steps, p = 3 teacher sub-steps)",
        "slam": "SLAM: γ-interpolated sub-path points, γ through time_cond_proj_dim (folded out at γ = 1), EMA 0.95"}


def card(name: str, stats: dict, cells: list[dict], device: str = "NVIDIA H200", n: int = 250) -> str:
    file, row = FILES[name]
    cfg = stats["config"]
    lines = [f"# {file}", "", f"{WHAT[name]}; student of `fewstep-tiny-teacher.safetensors` (7.6 M-parameter UNet).",
             "", "## Format", f"LoRA (peft, rank {cfg['lora_rank'] or LORA_RANK}, TLCM's target modules) in fp16 plus `override.*` tensors (SLAM: the "
             "time-embedding bias with γ = 1 folded in). `nodes.mlcm.students.load_student` merges it into a plain "
             "UNet of the teacher's architecture; `FewstepStudentLoader` does this in a graph.", "",
             f"Sampling: `{'MLCMScheduler' if stats['timesteps'] == 'milestones' else 'LCMSkipScheduler'}` + "
             "`KSamplerSelect(lcm)` + `BasicGuider` (no CFG, it is distilled in at scale "
             f"{cfg['guidance']}).", "", "## Training",
             f"One {device} ("
             + ("alone, after the stage-1 runs" if stats["init"] else "shared by the concurrent stage-1 runs")
             + f"), bf16 autocast, AdamW lr "
             f"{cfg['lr']}, batch {cfg['batch_size']}, skip {cfg['skip']}, pseudo-Huber c {cfg['huber_c']}, target "
             f"{cfg['target']}, "
             + ("states: its own 4-step samples re-noised to a milestone" if stats["init"]
                else f"states from {cfg['state_source']} (stride {cfg['state_step']})") + f", seed {cfg['seed']}"
             + (f", γ = 1 share {cfg['gamma_one']}" if cfg.get("gamma_one") else "")
             + (f", started from `{stats['init']}`" if stats["init"] else "") + ".",
             f"**{stats['steps']} optimizer steps in {stats['seconds']:.0f} s** (capped by wall time; the recipe's "
             f"step count {cfg['steps']} is an upper bound): loss {stats['loss_first']:.4f} at step 1, "
             f"{stats['loss_last_100']:.4f} averaged over the last 100 steps. Still a short run next to the papers' "
             "(TLCM: 12k + 2k iterations): see the table and the README for what it does and does not reach.", "",
             "Command: `python -m fewstep.bench.mlcm.gpu_run --out DIR --minilm MINILM_DIR --seconds 200 "
             "--stage2-seconds 55 --n 250` (or `python -m fewstep.bench.mlcm.students --out DIR --only "
             f"{'mlcm_stage1 mlcm' if stats['init'] else name}`).",
             "", f"## Evaluation ({n} held-out prompts, seed 1234 noise)",
             f"| steps | FD-EffNet | attribute acc. | reward | ms/img ({device}, batch 1) |", "|---|---|---|---|---|"]
    for c in cells:
        if c["method"] == row:
            lines.append(f"| {c['steps']} | {c['fd_effnet']:.2f} | {c['attribute_accuracy']:.3f} | "
                         f"{c['reward']:.3f} | {c['ms_per_image']:.1f} |")
    lines += ["", "## Licenses", "GPL-3.0-or-later, like the project. Teacher: ours (see its card); text encoder "
              "all-MiniLM-L6-v2 (Apache-2.0), metrics on EfficientNet-Lite0 (Apache-2.0), loaded from their packages."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    report, table, out = json.loads(Path(argv[0]).read_text()), json.loads(Path(argv[1]).read_text()), Path(argv[2])
    for name, stats in report.items():
        if name in FILES:             # ablation students (e.g. slam_g1) are in the table, not shipped
            (out / f"{FILES[name][0]}.md").write_text(card(name, stats, table["cells"], table["device"], table["n"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
