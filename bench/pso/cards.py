"""Model cards of the shipped PSO adapters, written from the GPU job's report (cells.json) and the judged table.

    python -m fewstep.bench.pso.cards DIR/cells.json bench/pso/results/table.json fewstep/nodes/pso/weights
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = {"online": "PSO online", "naive_online": "naive online", "offline": "PSO offline",
        "naive_offline": "naive offline"}
WHAT = {
    "online": "online PSO: two 4-step walks per prompt from the student as a Gaussian policy, the winner by the zoo "
              "scorer's image-prompt cosine, clipped log-ratio pairwise loss against the student with adapters off",
    "naive_online": "the naive baseline of online PSO: the plain denoising loss on each pair's winner (same walks)",
    "offline": "offline PSO on one concept: target renders vs the original student's own samples of the prompt, "
               "same noise and timestep on the 4-step grid, SNR-weighted x0 errors, hinge + prior term",
    "naive_offline": "the naive baseline of offline PSO: the plain denoising loss on the target renders",
}
SHIPPED = ("online",)


def card(mode: str, stats: dict, cells: list[dict], concept: str) -> str:
    cfg = stats["config"]
    lines = [f"# fewstep-pso-{mode.replace('_', '-')}", "",
             f"{WHAT[mode]}; LoRA (peft, rank {cfg['lora_rank']}, fp16) on the shipped MLCM student "
             "`fewstep/nodes/mlcm/weights/fewstep-mlcm-student.safetensors` (itself a LoRA on the 7.6 M-parameter built-in "
             "teacher).", "", "## Use",
             "`PSOAdapterLoader` (graph) or `nodes.pso.students.load_pso_unet(path)` merges it into a plain UNet. "
             "Sample like the MLCM student: `MLCMScheduler` (4 steps) + `KSamplerSelect(lcm)` + `BasicGuider`.", "",
             "## Training",
             f"One GPU, bf16 autocast, AdamW lr {cfg['lr']}, batch {cfg['batch_size']}, seed {cfg['seed']}, "
             f"timesteps {cfg['timesteps']}"
             + (f", β {cfg['beta']}, ratio clamp ε {cfg['clip']}" if mode == "online" else "")
             + (f", concept \"{concept}\", β {cfg['beta_offline']}, λ_prior {cfg['prior_weight']}" if mode == "offline"
                else "") + ".",
             f"**{stats['steps']} optimizer steps in {stats['seconds']:.0f} s** (time-capped): loss "
             f"{stats['loss_first']:.4f} at step 1, {stats['loss_last_20']:.4f} over the last 20 steps.", "",
             "Command: `python -m fewstep.bench.pso.gpu_run --out DIR --minilm MINILM_DIR --effnet "
             "EFFNET_FILE --seconds 165 --n 300 --batch 128` on an H200 "
             "(see `fewstep/nodes/pso/README.md`).", "",
             "## Evaluation (300 held-out prompts, seed 1234 noise; concept: 64 samples)",
             "| model | steps | FD-EffNet | attribute acc. | reward | concept attr. acc. | concept reward |",
             "|---|---|---|---|---|---|---|"]
    for c in cells:
        if c["method"] in (ROWS[mode], "MLCM student"):
            lines.append(f"| {c['method']} | {c['steps']} | {c['fd_effnet']:.2f} | {c['attribute_accuracy']:.3f} | "
                         f"{c['reward']:.3f} | {c['concept_attribute_accuracy']:.3f} | {c['concept_reward']:.3f} |")
    lines += ["", "One seed, one short run: the differences to the MLCM student are small (see the README's findings).",
              "", "## Licenses",
              "GPL-3.0-or-later, like the project. Base models: ours (see their cards); text encoder all-MiniLM-L6-v2 "
              "(Apache-2.0), the scorer's image tower EfficientNet-Lite0 (Apache-2.0)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    gpu, table, out = json.loads(Path(argv[0]).read_text()), json.loads(Path(argv[1]).read_text()), Path(argv[2])
    for mode in SHIPPED:
        text = card(mode, gpu["train"][mode], table["cells"], gpu["concept"])
        (out / f"fewstep-pso-{mode.replace('_', '-')}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
