"""PRD at demo size: K = 1 / 2 / 4 and shared vs plane-specific LoRA, trained the same number of iterations
from the shipped multi-view teacher, then scored on the 24 captions (one command).

    fewstep bench prd                     # python -m fewstep.bench.prd.table; writes bench/prd/results/

Rows: the untrained generator (LoRA at zero: the teacher's UNet with a fresh plane head and decoder; the
baseline), one row per variant, and the shipped generator. Columns: caption accuracy (the probe reads
colour and shape back from 4 views of each object; colour / shape alone), valid meshes (non-empty,
watertight, not clipped by the cube), seconds per object (text → K steps → triplane → SDF grid and
marching cubes, 1 thread), training seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from fewstep.nodes.prd.evaluate import evaluate_generator
from fewstep.nodes.prd.graph import load_generator_bundle
from fewstep.nodes.prd.train import PRDConfig, build_generator, train_prd
from fewstep.nodes.zoo.multiview.builtin import CaptionEmbedder, MultiviewTeacher, load_probe, load_teacher
from fewstep.nodes.zoo.multiview.data import all_primitives

log = logging.getLogger("fewstep.prd.table")
RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"k1": (1, "plane-specific"), "k2": (2, "plane-specific"), "k4": (4, "plane-specific"),
            "k4-shared": (4, "shared")}


def run_variant(name: str, teacher, probe, embed, args: argparse.Namespace) -> dict[str, Any]:
    """Train one variant for ``args.steps`` iterations (0 = the untrained baseline) and evaluate it."""
    k, lora = VARIANTS[name] if name in VARIANTS else (4, "plane-specific")
    cfg = PRDConfig(k=k, lora=lora, steps=max(args.steps, 1), seed=args.seed)
    gen = build_generator(teacher, cfg)
    start = time.monotonic()
    if name != "untrained":
        train_prd(gen, teacher, [p.caption() for p in all_primitives()], embed, cfg)
    train_s = time.monotonic() - start
    metrics = evaluate_generator(gen.eval(), probe, embed, k, seed=args.eval_seed)
    return {"variant": name, "k": k, "lora": lora, "iterations": 0 if name == "untrained" else cfg.steps,
            "train_seconds": round(train_s, 1), **metrics}


def markdown(table: dict[str, Any]) -> str:
    lines = ["| generator | K | LoRA | iterations | caption acc. | colour | shape | valid meshes | s / object | "
             "train s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        lines.append(f"| {r['variant']} | {r['k']} | {r['lora']} | {r['iterations']} | {r['caption_accuracy']:.3f} | "
                     f"{r['colour_accuracy']:.3f} | {r['shape_accuracy']:.3f} | {r['valid_meshes']:.3f} | "
                     f"{r['seconds_per_object']:.3f} | {r['train_seconds']:.0f} |")
    lines.append(f"\nChance: caption 1/24 = 0.042, colour 1/6 = 0.167, shape 1/4 = 0.25. {table['objects']} captions "
                 "x 4 views each.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fewstep bench prd", description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=["untrained", *VARIANTS], choices=["untrained", *VARIANTS])
    p.add_argument("--steps", type=int, default=30, help="PRD iterations per variant (default 30)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--eval-seed", type=int, default=123, help="noise seed of the evaluation (default 123)")
    p.add_argument("--no-shipped", action="store_true", help="skip the shipped generator's row")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for prd.json / prd.md (default bench/prd/results)")
    p.add_argument("--name", default="prd", help="file stem of the results (default prd)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)   # small ops: one thread is faster on a shared 2-core machine
    teacher, probe, embed = load_teacher(), load_probe(), CaptionEmbedder()
    rows = []
    for name in args.variants:
        rows.append(run_variant(name, teacher, probe, embed, args))
        log.info("%s", rows[-1])
    if not args.no_shipped:
        bundle = load_generator_bundle(MultiviewTeacher(teacher, embed, "shipped"))
        metrics = evaluate_generator(bundle.generator, probe, embed, bundle.k, seed=args.eval_seed)
        rows.append({"variant": "shipped", "k": bundle.k, "lora": bundle.generator.config.lora,
                     **_shipped_training(), **metrics})
    table = {"command": "fewstep bench prd " + " ".join(argv or []), "date": datetime.now(timezone.utc).isoformat(),
             "machine": f"{platform.machine()} CPU ({platform.processor() or 'unknown'}), torch {torch.__version__}, "
                        "1 thread, shared 2-core VM", "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                                for k, v in vars(args).items()},
             "objects": len(all_primitives()), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(table, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(table) + "\n")
    print(markdown(table))  # noqa: T201 - the command's output is the table
    return 0


def _shipped_training() -> dict[str, float]:
    """Iterations and training seconds of the shipped generator (its recipe's report)."""
    from fewstep.nodes.prd.bundle import weights_dir

    report = json.loads((weights_dir() / "prd-generator-report.json").read_text())
    return {"iterations": int(report["iterations"]), "train_seconds": float(report["train_seconds"])}


if __name__ == "__main__":
    raise SystemExit(main())
