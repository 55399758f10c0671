"""Train and evaluate the built-in AR models: VQ tokenizer -> AR transformer -> MAR model.

    PYTHONPATH=. python3 bench/zoo/ar_gpu_run.py --out DIR --cache .gpu_cache/ar --preset gpu

(``bash bench/zoo/ar_gpu_run.sh`` runs that with ``OUT``.) Imports only ``fewstep.nodes`` so it runs from a
bare checkout on a machine where fewstep is not installed. The caption embeddings come from ``--cache``
(``captions.write_cache``; the GPU machine has no MiniLM).

Writes into DIR: ``fewstep-tiny-{vq,ar,mar}.safetensors`` + ``.json`` (the loader's format:
``nodes.zoo.ar.builtin.load_ar(root=DIR)``), ``ar_eval.json`` (probe accuracy of real renders, VQ and PCA
reconstructions, AR and MAR samples of held-out captions; sampling time per image on this device; training
logs), ``ar_samples.safetensors`` (the generated held-out tokens, for ``fewstep bench ar --samples`` to
compute FD-EffNet and the scorer on a machine with those networks) and ``ar_gpu_run.log``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from fewstep.nodes.core.ar.sampling import ConstantHeadSteps, sample_ar, sample_mar
from fewstep.nodes.zoo import data
from fewstep.nodes.zoo.ar import builtin, captions, train
from fewstep.nodes.zoo.ar.tokenizer import VQTokenizer
from fewstep.nodes.zoo.builtin import load_probe

LOG = logging.getLogger("fewstep.bench.zoo.ar_gpu_run")
AR_EVAL = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "cfg_scale": 3.0}
MAR_EVAL = {"iterations": 16, "head_steps": 50, "temperature": 1.0, "cfg_scale": 3.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _caption_sets(cache: Path | None, preset: train.Preset, n_eval: int) -> tuple[captions.CaptionSet, captions.CaptionSet]:
    if cache is not None:
        return captions.read_cache(cache, "train", preset.train_captions), captions.read_cache(cache, "heldout", n_eval)
    return captions.embed_split("train", preset.train_captions), captions.embed_split("heldout", n_eval)


def _probe_row(probe: object, images: torch.Tensor, scenes: list[data.Scene]) -> dict[str, float]:
    return probe.evaluate(images.clamp(0, 1).permute(0, 2, 3, 1).float().cpu(), scenes)


@torch.no_grad()
def _timed(fn: object, device: torch.device) -> tuple[torch.Tensor, float]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def evaluate(tok: VQTokenizer, ar: torch.nn.Module, mar: torch.nn.Module, held: captions.CaptionSet,
             device: torch.device, seed: int = 0) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """Probe accuracy of every row on the held-out captions and sampling time per image."""
    probe = load_probe(device)
    real = train.render_images(held.scenes).to(device)
    cond = held.embeddings.to(device)
    rows: dict[str, object] = {"real": _probe_row(probe, real, held.scenes),
                               "vq_reconstruction": _probe_row(probe, tok.decode(tok.encode(real)), held.scenes),
                               "pca_reconstruction": _probe_row(
                                   probe, tok.decode_continuous(tok.encode_continuous(real)), held.scenes)}
    gen = torch.Generator().manual_seed(seed)
    tokens, secs = _timed(lambda: sample_ar(ar, cond, generator=gen, **AR_EVAL), device)
    rows["ar"] = {**_probe_row(probe, tok.decode(tokens), held.scenes), **AR_EVAL,
                  "seconds_per_image": secs / len(cond), "batch": len(cond)}
    gen = torch.Generator().manual_seed(seed)
    mar_kw = {k: v for k, v in MAR_EVAL.items() if k != "head_steps"}
    latents, secs = _timed(lambda: sample_mar(mar, cond, head_steps=ConstantHeadSteps(MAR_EVAL["head_steps"]),
                                              generator=gen, **mar_kw), device)
    rows["mar"] = {**_probe_row(probe, tok.decode_continuous(latents), held.scenes), **MAR_EVAL,
                   "seconds_per_image": secs / len(cond), "batch": len(cond)}
    one = cond[:1]
    _, rows["ar_batch1_seconds"] = _timed(lambda: sample_ar(ar, one, generator=torch.Generator().manual_seed(0),
                                                            **AR_EVAL), device)
    return rows, {"ar_tokens": tokens.to(torch.int16).cpu(), "mar_latents": latents.half().cpu()}


def _summary(args: argparse.Namespace, device: torch.device, log: list[dict[str, float]]) -> dict[str, object]:
    """What a model card needs of one training: preset, device, steps, time, loss, date, resumed-from."""
    last = log[-1] if log else {}
    before = {}
    if args.resume is not None and not args.from_scratch:  # steps of the run this one continued
        for kind in ("ar", "mar"):
            meta = builtin.read_meta(kind, args.resume).get("training", {}) if kind in builtin.available(args.resume) else {}
            before[kind] = meta
    return {"preset": args.preset, "device": str(device), "steps": last.get("step"), "seconds": last.get("seconds"),
            "final_loss": last.get("loss"), "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "command": " ".join(sys.argv), "continued_from": before or None}


def _tokenizer(args: argparse.Namespace, preset: train.Preset, train_set: captions.CaptionSet,
               device: torch.device) -> VQTokenizer:
    """The resumed run's tokenizer, or a fresh fit saved into ``--out``."""
    if args.resume is not None:
        tok = builtin.load_tokenizer(args.resume, device)
        meta = builtin.read_meta("vq", args.resume).get("training", {})
    else:
        tok = train.fit_vq(train_set.scenes[: preset.vq_images], preset.vq, device=device)
        meta = {"preset": args.preset, "device": str(device), "train_scenes": preset.vq_images,
                "date": time.strftime("%Y-%m-%d", time.gmtime())}
    builtin.save_model(tok, "vq", args.out, {"training": meta})
    return tok


def _copy_untrained(args: argparse.Namespace) -> None:
    """With ``--only``, the other model comes unchanged from ``--resume`` so ``--out`` is complete."""
    import shutil

    for kind in ("ar", "mar"):
        if kind not in args.only and args.resume is not None and args.resume != args.out:
            src = args.resume / builtin.KINDS[kind]
            shutil.copy(src, args.out / src.name)
            shutil.copy(src.with_suffix(".json"), args.out / src.with_suffix(".json").name)


def run(args: argparse.Namespace) -> dict[str, object]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = train.PRESETS[args.preset]
    if args.seconds is not None:        # shorter wall-time budget per model (the preset's recipes otherwise)
        preset = replace(preset, ar_recipe=replace(preset.ar_recipe, seconds=args.seconds),
                         mar_recipe=replace(preset.mar_recipe, seconds=args.seconds))
    report: dict[str, object] = {"preset": args.preset, "device": str(device), "recipe": train.preset_dict(preset),
                                 "command": " ".join(sys.argv)}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    t0 = time.perf_counter()
    train_set, held = _caption_sets(args.cache, preset, args.n_eval)
    tok = _tokenizer(args, preset, train_set, device)
    tokens, latents = train.encode_dataset(tok, train_set.scenes, preset.variants)
    report["data_seconds"] = time.perf_counter() - t0
    LOG.info("tokenizer + data: %.0f s", report["data_seconds"])
    if "ar" in args.only:
        init = builtin.load_ar(args.resume, device) if args.resume and not args.from_scratch else None
        ar_cfg = init.config if init is not None else replace(preset.ar, vocab_size=preset.vq.codebook_size)
        ar, report["ar_log"] = train.train_ar(tokens, train_set, ar_cfg, preset.ar_recipe, device, init)
        builtin.save_model(ar, "ar", args.out, {"training": _summary(args, device, report["ar_log"])})
    if "mar" in args.only:
        init_mar = builtin.load_mar(args.resume, device) if args.resume and not args.from_scratch else None
        mar_cfg = init_mar.config if init_mar is not None else replace(
            preset.mar, token_dim=preset.vq.dim, token_scale=float(tok.latent_std))
        mar, report["mar_log"] = train.train_mar(latents, train_set, mar_cfg, preset.mar_recipe, device, init_mar)
        builtin.save_model(mar, "mar", args.out, {"training": _summary(args, device, report["mar_log"])})
    _copy_untrained(args)
    # evaluate the saved files (fp16 round trip included), as a user would load them
    tok = builtin.load_tokenizer(args.out, device)
    ar, mar = builtin.load_ar(args.out, device), builtin.load_mar(args.out, device)
    report["eval"], samples = evaluate(tok, ar, mar, held, device)
    report["eval_captions"] = {"split": "heldout", "n": len(held.captions), "seed": held.seed}
    report["total_seconds"] = time.perf_counter() - t0
    from safetensors.torch import save_file

    save_file(samples, str(args.out / "ar_samples.safetensors"))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ar_gpu_run", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=None, help="folder of ar_captions.safetensors (None: embed with MiniLM)")
    p.add_argument("--preset", choices=sorted(train.PRESETS), default="gpu")
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=None, help="training wall time per model (default: the preset's)")
    p.add_argument("--n-eval", type=int, default=256, help="held-out captions evaluated")
    p.add_argument("--resume", type=Path, default=None, help="continue from the models in this folder (its tokenizer)")
    p.add_argument("--from-scratch", action="store_true", help="with --resume: reuse only the tokenizer")
    p.add_argument("--only", nargs="+", choices=["ar", "mar"], default=["ar", "mar"], help="models to train")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.FileHandler(args.out / "ar_gpu_run.log"), logging.StreamHandler()])
    report = run(args)
    (args.out / "ar_eval.json").write_text(json.dumps(report, indent=1))
    LOG.info("wrote %s", args.out / "ar_eval.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
