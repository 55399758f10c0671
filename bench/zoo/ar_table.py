"""``fewstep bench ar``: quality and speed of the built-in AR models on held-out captions.

    fewstep bench ar [--n 64] [--weights DIR] [--out bench/zoo/results/ar_table.json]

Rows (each on the same ``--n`` held-out captions, ``make_split("heldout", n, seed)``):
- real renders of the captions with fresh jitter (the floor of every metric), and VQ reconstructions (the
  tokenizer's ceiling for both models);
- the AR transformer (next-token, KV cache) at CFG 1 and 3, and without the KV cache (same tokens, timing only);
- the MAR model at 16 iterations x 50 head steps and x 5 head steps (CFG 3).
Metrics: probe attribute accuracy, scorer similarity, FD-EffNet against the real renders, and sampling
seconds per image on this machine (batch of n). Writes JSON and markdown (``.md`` beside the JSON).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "ar_table.json"


def _rows(n: int) -> list[dict[str, Any]]:
    return [
        {"row": "AR, CFG 1", "kind": "ar", "cfg_scale": 1.0, "use_kv_cache": True},
        {"row": "AR, CFG 3", "kind": "ar", "cfg_scale": 3.0, "use_kv_cache": True},
        {"row": "AR, CFG 3, no KV cache", "kind": "ar", "cfg_scale": 3.0, "use_kv_cache": False},
        {"row": "MAR, 16 it x 50 head steps, CFG 3", "kind": "mar", "iterations": 16, "head_steps": 50, "cfg_scale": 3.0},
        {"row": "MAR, 16 it x 5 head steps, CFG 3", "kind": "mar", "iterations": 16, "head_steps": 5, "cfg_scale": 3.0},
    ]


def _sampler(spec: dict[str, Any], models: dict[str, Any], cond: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A closure that samples IMAGE-layout images [n, 64, 64, 3] for one row."""
    from fewstep.nodes.core.ar.sampling import ConstantHeadSteps, sample_ar, sample_mar

    tok = models["vq"]
    gen = torch.Generator().manual_seed(0)
    if spec["kind"] == "ar":
        def run() -> torch.Tensor:
            tokens = sample_ar(models["ar"], cond, cfg_scale=spec["cfg_scale"], use_kv_cache=spec["use_kv_cache"],
                               generator=gen)
            return tok.decode(tokens).clamp(0, 1).permute(0, 2, 3, 1)
        return run

    def run_mar() -> torch.Tensor:
        latents = sample_mar(models["mar"], cond, iterations=spec["iterations"],
                             head_steps=ConstantHeadSteps(spec["head_steps"]), cfg_scale=spec["cfg_scale"], generator=gen)
        return tok.decode_continuous(latents).clamp(0, 1).permute(0, 2, 3, 1)
    return run_mar


def _measure(images: torch.Tensor, prompts: list[str], judges: dict[str, Any], ref_feats: Any) -> dict[str, float]:
    from fewstep.nodes.core import metrics

    out = dict(metrics.attribute_alignment(images, prompts, judges["probe"]))
    out["scorer_similarity"] = metrics.scorer_similarity(images, prompts, judges["scorer"])
    out["fd_effnet"] = metrics.frechet_distance(metrics.effnet_features(images, judges["effnet"]), ref_feats)
    return out


def build_table(n: int, seed: int, weights: Path | None) -> dict[str, Any]:
    from fewstep.nodes.core import metrics
    from fewstep.nodes.zoo import data
    from fewstep.nodes.zoo.ar import builtin, captions, train
    from fewstep.nodes.zoo.builtin import load_probe, load_scorer
    from fewstep.nodes.zoo.effnet import load_efficientnet_lite0

    held = captions.embed_split("heldout", n, seed)
    models = {"vq": builtin.load_tokenizer(weights), "ar": builtin.load_ar(weights), "mar": builtin.load_mar(weights)}
    judges = {"probe": load_probe(), "scorer": load_scorer(), "effnet": load_efficientnet_lite0()}
    real = train.render_images(held.scenes)                                               # [n, 3, 64, 64]
    ref_feats = metrics.effnet_features(real.permute(0, 2, 3, 1), judges["effnet"])
    rng = random.Random(f"ar-table:{seed}")
    rejittered = train.render_images([train.rejitter(s, rng) for s in held.scenes]).permute(0, 2, 3, 1)
    rows = [{"row": "real renders (fresh jitter)", **_measure(rejittered, held.captions, judges, ref_feats)},
            {"row": "VQ reconstruction", **_measure(models["vq"].decode(models["vq"].encode(real)).clamp(0, 1)
                                                    .permute(0, 2, 3, 1), held.captions, judges, ref_feats)}]
    for spec in _rows(n):
        t0 = time.perf_counter()
        images = _sampler(spec, models, held.embeddings)()
        seconds = time.perf_counter() - t0
        rows.append({**spec, **_measure(images, held.captions, judges, ref_feats), "seconds_per_image": seconds / n})
        sys.stderr.write(f"{spec['row']}: {seconds:.1f} s\n")
    cards = {k: builtin.read_meta(k, weights).get("training", {}) for k in ("vq", "ar", "mar")}
    return {"n": n, "seed": seed, "split": "heldout", "device": "cpu", "threads": torch.get_num_threads(),
            "weights": str(weights or builtin.weights_dir()), "models": cards, "rows": rows,
            "probe_scenes": [data.caption(s) for s in held.scenes[:3]]}


def markdown(table: dict[str, Any]) -> str:
    lines = [f"Held-out captions: {table['n']} (seed {table['seed']}); CPU, {table['threads']} threads; "
             "FD-EffNet against renders of the same captions.", "",
             "| row | attribute acc. | colour | shape | count | scorer | FD-EffNet | s / image |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        secs = f"{r['seconds_per_image']:.3f}" if "seconds_per_image" in r else "-"
        lines.append(f"| {r['row']} | {r['attribute_accuracy']:.3f} | {r['colour_accuracy']:.3f} | "
                     f"{r['shape_accuracy']:.3f} | {r['count_accuracy']:.3f} | {r['scorer_similarity']:.3f} | "
                     f"{r['fd_effnet']:.1f} | {secs} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fewstep bench ar", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=64, help="held-out captions (and reference renders)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", type=Path, default=None, help="folder of fewstep-tiny-{vq,ar,mar} (default: shipped)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    table = build_table(args.n, args.seed, args.weights)
    table["command"] = "fewstep bench ar " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1))
    text = markdown(table)
    args.out.with_suffix(".md").write_text(f"`{table['command']}`\n\n{text}")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
