"""Model card of a shipped DD generator, written from its JSON (recipe) and the DD table (measured quality).

    python -m fewstep.bench.dd.cards --generator fewstep/nodes/dd/weights/fewstep-dd-tiny-ar.safetensors \
        --table bench/dd/results/dd_table.json --command "<how it was trained>" --hardware "..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fewstep.bench.dd.table import markdown


def card(meta: dict, table: dict, command: str, hardware: str, date: str) -> str:
    train = meta["train"]
    size = meta.get("file_mb", 0.0)
    return f"""# {meta.get("name", "fewstep-dd-tiny-ar")}: Distilled Decoding generator of fewstep-tiny-ar (CPU demo)

**What it is.** A one/two-step generator for the built-in AR model `fewstep-tiny-ar` (64 VQ tokens of the
procedural 64×64 scenes, codebook 512): a copy of the teacher's transformer that reads Gaussian noise per
token position (16-d, the standardised codebook space) and outputs all 64 tokens in one pass (Distilled
Decoding, Liu et al., arXiv 2412.17153). Step set {tuple(train['t_list'])}: one step from pure noise, or a
second pass from the first {train['t_list'][-1]} tokens and the same noise. fp16 safetensors, {size:.2f} MB.

**Data.** No images: {meta['pairs']} pairs (noise → the teacher's tokens through DD's flow-matching map, the
teacher's CFG {meta['eval_setup']['cfg']} on its logits, {meta['eval_setup']['flow_steps']} Euler steps of the closed-form velocity
per token) over the MiniLM embeddings of 8,192 procedural training captions.

**Recipe.** {meta['steps_run']} AdamW steps (lr {train['lr']}, batch {train['batch_size']}, warm-up {train['warmup']},
cosine to 10 %), loss = CE + {train['cont_weight']} × continuous-head MSE (+ {train['patch_weight']} × decoded-patch),
EMA {train['ema_decay']}; {meta['pair_seconds']:.0f} s of pair generation and {meta['train_seconds']:.0f} s of
training on {hardware}, {date}.

**Command.** `{command}`

**Teacher.** {meta.get('teacher_note', 'the shipped fewstep-tiny-ar')} (teacher sha256
`{meta.get('teacher_sha256', '?')[:16]}…`).

**Measured** (`fewstep bench dd`, {table['n_eval']} held-out captions, {table['device']}):

{markdown(table)}

FD-EffNet: Fréchet distance of EfficientNet-Lite0 features against real renders of the same scenes, and against
the teacher's own samples (the teacher flow map's value is the estimator's floor at this N: two samples of one
distribution). Teacher NLL: the teacher's negative log-likelihood per token of the generated tokens. The naive
rows are the paper's "onestep*" baselines; their marginals are estimated from 4 teacher samples per caption (their
ms include drawing those). Times are batch 1 on a shared 2-core CPU (noisy).

{limits(meta, table)}

**License.** GPL-3.0-or-later (ours); trained from our own teacher on generated data.
"""


def limits(meta: dict, table: dict) -> str:
    """The card's limits paragraph, with the probe accuracies of the table's rows."""
    acc = {r["method"].split(" (")[0]: r.get("attribute_accuracy", float("nan")) for r in table["rows"]}
    return (f"**Limits.** A CPU demo: {meta['steps_run']:,} steps on {meta['pairs']:,} pairs is far from the paper's "
            "recipe (the GPU driver `bench/dd/gpu_run.sh` is written for 262k pairs, not run). Probe attribute "
            f"accuracy: DD 1-step {acc.get('DD 1-step', float('nan')):.3f}, 2-step {acc.get('DD 2-step', float('nan')):.3f}; "
            f"the teacher flow map (the tokens DD is trained on, its ceiling) {acc.get('teacher flow map', float('nan')):.3f}; "
            f"the marginals baseline {acc.get('marginals', float('nan')):.3f}. Compare rows of one table only: "
            "they share the teacher checkpoint, its CFG and the noise.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", type=Path, required=True)
    p.add_argument("--table", type=Path, required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--hardware", required=True)
    p.add_argument("--date", required=True)
    args = p.parse_args(argv)
    meta = json.loads(args.generator.with_suffix(".json").read_text())
    meta["name"] = args.generator.stem
    meta["file_mb"] = args.generator.stat().st_size / 2**20
    table = json.loads(args.table.read_text())
    args.generator.with_suffix(".md").write_text(card(meta, table, args.command, args.hardware, args.date))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
