"""GPU driver of DD: teacher → pair dataset → DD generator → the table's rows, all under ``--out``.

    OUT=<dir> AR_TEACHER_DIR=<AR run folder> bash bench/dd/gpu_run.sh          # one H100, <= 7 min
    TINY=1 OUT=/tmp/dd bash bench/dd/gpu_run.sh                                # CPU smoke test (own tiny teacher)

Reads the AR teacher and tokenizer from ``AR_TEACHER_DIR`` (``fewstep-tiny-ar``/``-vq`` files as the zoo's
driver writes them) and the MiniLM caption embeddings from ``.gpu_cache/dd`` (written here with
``fewstep.nodes.zoo.ar.captions.write_cache``: the GPU machine has no MiniLM). Writes:

    fewstep-dd-tiny-ar.safetensors/.json   the DD generator (fp16) and its recipe, pair count, loss curve
    dd_eval.json                           rows: calls, ms/img (batch 1), teacher NLL, probe accuracy
    eval_tokens.safetensors                every row's tokens on the held-out captions (FD is judged from
                                           these by ``fewstep bench dd --gpu-dir``)
    log.txt
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from fewstep.bench.dd.evaluate import EvalSetup, generate_rows
from fewstep.nodes.core.train.loop import Checkpointer
from fewstep.nodes.dd.flow import flow_space
from fewstep.nodes.dd.pairs import PairSpec, PairStore, build_pairs, teacher_tag
from fewstep.nodes.dd.teacher import teacher_flow_tokens
from fewstep.nodes.dd.train import DDTrainConfig, save_generator, train_dd
from fewstep.nodes.zoo.ar.captions import CaptionSet, read_cache

LOG = logging.getLogger("fewstep.bench.dd.gpu")
GENERATOR_FILE = "fewstep-dd-tiny-ar.safetensors"

# (pairs, pair seconds, train steps, train seconds, batch, eval captions, marginal samples)
BUDGETS = {"gpu": (262_144, 60.0, 40_000, 150.0, 256, 512, 8),
           # the CPU demo (2 shared cores): ~5 min of pairs, <= 12 min of training
           "cpu": (8192, 300.0, 4000, 720.0, 64, 128, 4),
           "tiny": (96, None, 12, None, 16, 12, 2)}


def tiny_teacher(folder: Path, captions: CaptionSet) -> Path:
    """A 1-layer teacher trained for a few steps here (the driver's smoke test without an AR run)."""
    from fewstep.nodes.zoo.ar.builtin import save_model
    from fewstep.nodes.zoo.ar.models import ARConfig
    from fewstep.nodes.zoo.ar.tokenizer import VQConfig
    from fewstep.nodes.zoo.ar.train import Recipe, encode_dataset, fit_vq, train_ar

    vq = fit_vq(captions.scenes[:128], VQConfig(codebook_size=64))
    tokens, _ = encode_dataset(vq, captions.scenes, 1)
    ar, _ = train_ar(tokens, captions, ARConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2),
                     Recipe(steps=30, batch_size=16, warmup=3), "cpu")
    save_model(vq, "vq", folder)
    save_model(ar, "ar", folder)
    return folder


def teacher_file_sha256(teacher_dir: Path) -> str:
    import hashlib

    from fewstep.nodes.zoo.ar.builtin import AR_FILE

    return hashlib.sha256((teacher_dir / AR_FILE).read_bytes()).hexdigest()


def build(teacher_dir: Path, captions_dir: Path, out: Path, scratch: Path, budget: str, device: str,
          train_seconds: float | None = None, steps: int | None = None, pairs_count: int | None = None) -> dict:
    from fewstep.nodes.zoo.ar.builtin import load_ar, load_tokenizer

    n_pairs, pair_s, budget_steps, train_s, batch, n_eval, marg = BUDGETS[budget]
    steps = steps if steps is not None else budget_steps
    n_pairs = pairs_count if pairs_count is not None else n_pairs
    train_s = train_seconds if train_seconds is not None else train_s
    train_caps = read_cache(captions_dir, "train")
    held = read_cache(captions_dir, "heldout", n_eval)
    if budget == "tiny" and not (teacher_dir / "fewstep-tiny-ar.safetensors").is_file():
        tiny_teacher(teacher_dir, read_cache(captions_dir, "train", 256))
    teacher, tok = load_ar(teacher_dir, device), load_tokenizer(teacher_dir, device)
    book = flow_space(tok.codebook).to(device)
    setup = EvalSetup(marginal_samples=marg, flow_steps=32 if budget == "gpu" else 16)   # 16: CPU time
    teacher_name, teacher_sha = teacher_tag("fewstep-tiny-ar", teacher), teacher_file_sha256(teacher_dir)
    spec = PairSpec(count=n_pairs, seq_len=teacher.config.seq_len, dim=book.shape[1], vocab=book.shape[0],
                    shard_size=1024 if budget == "cpu" else min(8192, max(1, n_pairs // 8)), seed=0, flow_steps=setup.flow_steps,
                    teacher=teacher_name, cfg=setup.cfg)

    def decode(noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return teacher_flow_tokens(teacher, noise.to(device), cond.to(device), book, cfg_scale=setup.cfg)

    t0 = time.perf_counter()
    store = build_pairs(PairStore(scratch / "pairs"), spec, train_caps.captions, train_caps.embeddings, decode, batch_size=4096,
                        max_seconds=pair_s, progress=lambda j, n: LOG.info("pair shard %d/%d", j, n))
    pairs = store.load()
    pair_seconds = time.perf_counter() - t0
    LOG.info("%d pairs in %.0f s", len(pairs["tokens"]), pair_seconds)
    cfg = DDTrainConfig(steps=steps, batch_size=batch, lr=5e-4 if budget == "gpu" else 1e-3,
                        warmup={"gpu": 200, "cpu": 50, "tiny": 2}[budget], t_list=setup.t_list, cont_weight=0.1,
                        patch_weight=0.0, ema_decay={"gpu": 0.999, "cpu": 0.995, "tiny": 0.0}[budget])
    t0 = time.perf_counter()
    dd, state = train_dd(teacher, book, pairs, train_caps.embeddings, cfg, tokenizer=tok, device=device,
                         checkpointer=Checkpointer(scratch / "ckpt", every=0), max_seconds=train_s,
                         autocast=torch.bfloat16 if device.startswith("cuda") else None)
    train_seconds = time.perf_counter() - t0
    LOG.info("DD: %d steps in %.0f s, loss %.3f -> %.3f", state.step, train_seconds, state.losses[0], state.losses[-1])
    recipe = {"pairs": len(pairs["tokens"]), "pair_seconds": pair_seconds, "pair_teacher": teacher_name,
              "pair_cfg": setup.cfg, "teacher_sha256": teacher_sha, "train": asdict(cfg),
              "steps_run": state.step, "train_seconds": train_seconds, "eval_setup": asdict(setup),
              "loss_curve": state.losses[:: max(1, len(state.losses) // 200)], "device": device_name(device)}
    save_generator(dd, out / GENERATOR_FILE, {"teacher": "fewstep-tiny-ar", **recipe})
    return evaluate(teacher, tok, dd, held, setup, out, device, recipe)


def evaluate(teacher: torch.nn.Module, tok: torch.nn.Module, dd: torch.nn.Module, held: CaptionSet,
             setup: EvalSetup, out: Path, device: str, recipe: dict) -> dict:
    from safetensors.torch import save_file

    from fewstep.nodes.zoo.builtin import load_probe

    tokens, rows = generate_rows(teacher, dd, held.embeddings, setup, device, log=LOG.info)
    probe = load_probe(device)
    for row in rows:
        images = tok.decode(tokens[row["method"]].to(device)).clamp(0, 1).permute(0, 2, 3, 1)
        row |= probe.evaluate(images, held.scenes)
    save_file({r["method"]: tokens[r["method"]].contiguous() for r in rows}, str(out / "eval_tokens.safetensors"))
    result = {"device": device_name(device), "n_eval": len(held.captions), "captions": held.captions,
              "scene_seed": held.seed, "rows": rows, "recipe": recipe}
    (out / "dd_eval.json").write_text(json.dumps(result, indent=1))
    return result


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True, help="AR run folder (fewstep-tiny-ar/-vq files)")
    p.add_argument("--captions", type=Path, default=Path(".gpu_cache/dd"), help="caption-embedding cache folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--scratch", type=Path, default=None, help="pairs and checkpoints (default: OUT/../dd_scratch)")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke test on the CPU")
    p.add_argument("--cpu-demo", action="store_true", help="the CPU demo budget (8192 pairs, <= 12 min training)")
    p.add_argument("--train-seconds", type=float, default=None,
                   help="wall-time cap of this call's training (default: the budget's); a re-run resumes the run")
    p.add_argument("--pairs", type=int, default=None, help="pair count (default: the budget's)")
    p.add_argument("--steps", type=int, default=None, help="training steps of the schedule (default: the budget's)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "log.txt")])
    budget = "tiny" if args.tiny else "cpu" if args.cpu_demo else "gpu"
    device = "cuda" if torch.cuda.is_available() and budget == "gpu" else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    scratch = args.scratch or args.out.parent / f"{args.out.name}_dd_scratch"
    result = build(args.teacher, args.captions, args.out, scratch, budget, device, args.train_seconds,
                   args.steps, args.pairs)
    LOG.info("%s", json.dumps(result["rows"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
