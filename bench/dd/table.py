"""The DD miniature of the paper's Table 1 (one command):

    fewstep bench dd                                   # CPU: shipped teacher + shipped DD generator, generate + judge
    fewstep bench dd --gpu-dir /work/gpu_results/dd --teacher-dir /work/gpu_results/ar
                                                       # judge a GPU run's tokens (bench/dd/gpu_run.sh) here

Rows and the columns measured at generation: ``evaluate.py``. Judged here: FD-EffNet of the decoded images
against real renders of the same held-out scenes, and the probe's attribute accuracy. Writes
``bench/dd/results/dd_table.json`` (or ``--out``) and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from fewstep.bench.dd.evaluate import EvalSetup, generate_rows
from fewstep.bench.dd.judge import Judge, to_image

LOG = logging.getLogger("fewstep.bench.dd")
RESULTS = Path(__file__).resolve().parent / "results"


def judge_rows(rows: list[dict], tokens: dict[str, torch.Tensor], tokenizer: torch.nn.Module, scenes: list) -> None:
    """FD to real renders, FD to the teacher's own samples (the first row: how close to what is distilled),
    probe accuracy."""
    j = Judge(scenes)
    teacher = j.features(to_image(tokenizer.decode(tokens[rows[0]["method"]].long())))
    for row in rows:
        row |= j(to_image(tokenizer.decode(tokens[row["method"]].long())), teacher)
        row["fd_to_teacher"] = row.pop("fd_to_reference")
        LOG.info("%s: FD %.2f (to teacher %.2f), attribute acc %.3f", row["method"], row["fd_effnet"],
                 row["fd_to_teacher"], row["attribute_accuracy"])


def from_gpu(gpu_dir: Path, teacher_dir: Path | None) -> dict:
    """Judge the tokens of a GPU run (``dd_eval.json`` + ``eval_tokens.safetensors``)."""
    from safetensors.torch import load_file

    from fewstep.nodes.zoo.ar.builtin import load_tokenizer

    result = json.loads((gpu_dir / "dd_eval.json").read_text())
    tokens = load_file(str(gpu_dir / "eval_tokens.safetensors"))
    scenes = held_out_scenes(result["captions"], result["scene_seed"])
    judge_rows(result["rows"], tokens, load_tokenizer(teacher_dir), scenes)
    return result


def held_out_scenes(captions: list[str], seed: int) -> list:
    """The held-out scenes a GPU run was judged on, regenerated (their captions must match)."""
    from fewstep.nodes.zoo import data

    for total in (len(captions), 512):                 # the caption cache holds 512 held-out scenes
        scenes = data.make_split("heldout", total, seed=seed)[:len(captions)]
        if [data.caption(s) for s in scenes] == captions:
            return scenes
    raise ValueError("the GPU run's held-out captions cannot be regenerated here (scene generator changed?)")


def on_cpu(n: int, generator: Path | None, setup: EvalSetup) -> dict:
    """Generate every row here with the shipped teacher and DD generator, then judge."""
    from fewstep.nodes.dd.weights_io import load_shipped_generator
    from fewstep.nodes.zoo.ar.builtin import load_ar, load_tokenizer
    from fewstep.nodes.zoo.ar.captions import embed_split

    teacher, tok = load_ar(), load_tokenizer()
    dd, meta = load_shipped_generator(generator)
    held = embed_split("heldout", n)
    tokens, rows = generate_rows(teacher, dd, held.embeddings, setup, "cpu", log=LOG.info)
    judge_rows(rows, tokens, tok, held.scenes)
    return {"device": "cpu", "n_eval": n, "rows": rows, "recipe": {k: meta[k] for k in meta if k != "loss_curve"}}


def markdown(result: dict) -> str:
    teacher_ms = result["rows"][0]["ms_per_image"]
    lines = [f"| method | network calls | FD-EffNet to renders ↓ | FD-EffNet to teacher ↓ | attribute acc. ↑ | "
             f"teacher NLL / token | ms / img ({result['device']}, batch 1) | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['calls']} | {r.get('fd_effnet', float('nan')):.2f} | "
                     f"{r.get('fd_to_teacher', float('nan')):.2f} | "
                     f"{r.get('attribute_accuracy', float('nan')):.3f} | {r['teacher_nll']:.2f} | "
                     f"{r['ms_per_image']:.1f} | {teacher_ms / r['ms_per_image']:.1f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu-dir", type=Path, default=None, help="output folder of bench/dd/gpu_run.sh to judge")
    p.add_argument("--teacher-dir", type=Path, default=None, help="AR run folder of that GPU run (its tokenizer)")
    p.add_argument("--generator", type=Path, default=None, help="DD generator file (default: the shipped one)")
    p.add_argument("--n", type=int, default=256, help="held-out captions on the CPU (default 256)")
    p.add_argument("--out", type=Path, default=RESULTS / "dd_table.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_grad_enabled(False)
    result = from_gpu(args.gpu_dir, args.teacher_dir) if args.gpu_dir else on_cpu(args.n, args.generator, EvalSetup())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(result))  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
