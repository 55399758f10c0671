"""The DiSA miniature on the built-in MAR model (one command):

    fewstep bench disa --n 256 --out bench/disa/results/disa.json          # CPU: generate, judge, plot
    python -m fewstep.bench.disa.table --mar-dir DIR --tokens-only --out DIR/disa   # GPU: tokens + timings

Rows (held-out captions; same orders and head noise seed per row): the MAR baseline (one token per
iteration, 100 head steps: the paper's "256 × 100" at our L = 64), MAR at 16 iterations with a constant
T ∈ {5, 10, 20, 50}, and DiSA at 16 iterations annealing 50 → 5 (linear, cosine, two-stage; head timesteps
clipped at 950 as the paper). Columns: FD-EffNet against real renders, probe attribute accuracy, head
evaluations per image (Σ_k T(k)·n_k), sequential head calls (Σ_k T(k)), batch-1 ms per image.
Plus the evidence plot: the head's conditional variance against AR progress (``variance.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fewstep.bench.disa.plot import svg_plot
from fewstep.bench.disa.variance import conditional_variance
from fewstep.nodes.core.ar.sampling import HeadStepSchedule, masked_count, sample_mar
from fewstep.nodes.disa.schedules import (
    CLIP_TIMESTEP,
    CosineHeadSteps,
    FixedHeadSteps,
    LinearHeadSteps,
    TwoStageHeadSteps,
)

LOG = logging.getLogger("fewstep.bench.disa")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Row:
    name: str
    iterations: int
    schedule: HeadStepSchedule
    t_max: int | None = None                 # None: 999 (MAR); DiSA rows: 950


def rows(seq_len: int) -> list[Row]:
    k = 16
    return [Row(f"MAR baseline ({seq_len} it × 100)", seq_len, FixedHeadSteps(100)),
            *[Row(f"constant {t} (16 it)", k, FixedHeadSteps(t)) for t in (50, 20, 10, 5)],
            Row("DiSA linear 50→5 (16 it)", k, LinearHeadSteps(50, 5), CLIP_TIMESTEP),
            Row("DiSA cosine 50→5 (16 it)", k, CosineHeadSteps(50, 5), CLIP_TIMESTEP),
            Row("DiSA two-stage 50→5 (16 it)", k, TwoStageHeadSteps(50, 5), CLIP_TIMESTEP)]


def head_cost(row: Row, seq_len: int) -> tuple[int, int]:
    """(head evaluations per image Σ T(k)·n_k, sequential head calls Σ T(k)) of the MAR mask schedule."""
    left, evals, calls = seq_len, 0, 0
    for k in range(row.iterations):
        n_left = masked_count(k, row.iterations, seq_len, left)
        steps = row.schedule(k, row.iterations)
        evals += steps * (left - n_left)
        calls += steps
        left = n_left
    return evals, calls


def captions(n: int, cache: Path | None) -> tuple[list, torch.Tensor]:
    """Held-out scenes and their MiniLM embeddings (from the GPU cache when given, else MiniLM here)."""
    from fewstep.nodes.zoo.ar.captions import embed_split, read_cache

    cs = read_cache(cache, "heldout", n) if cache is not None else embed_split("heldout", n)
    return cs.scenes, cs.embeddings


@torch.no_grad()
def generate(model: torch.nn.Module, cond: torch.Tensor, device: str, cfg: float, batch: int = 128
             ) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Continuous tokens [N, L, D] of every row and its costs and batch-1 latency."""
    seq_len = model.config.seq_len
    tokens, out = {}, []
    for row in rows(seq_len):
        def run(c: torch.Tensor, gen: torch.Generator, row: Row = row) -> torch.Tensor:
            return sample_mar(model, c, iterations=row.iterations, head_steps=row.schedule, cfg_scale=cfg,
                              generator=gen, head_t_max=row.t_max)
        gen = torch.Generator().manual_seed(1234)
        t0 = time.perf_counter()
        tokens[row.name] = torch.cat([run(cond[a:a + batch].to(device), gen).cpu() for a in range(0, len(cond), batch)])
        evals, calls = head_cost(row, seq_len)
        ms = latency_ms(run, cond[:1].to(device), device)
        out.append({"method": row.name, "iterations": row.iterations, "head_evals_per_image": evals,
                    "sequential_head_calls": calls, "ms_per_image": ms})
        LOG.info("%s: %d head evals, %.1f ms/img (batch 1), %.0f s for %d", row.name, evals, ms,
                 time.perf_counter() - t0, len(cond))
    return tokens, out


def latency_ms(run: object, cond: torch.Tensor, device: str, repeats: int = 3) -> float:
    gen = torch.Generator().manual_seed(0)
    run(cond, gen)
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(cond, gen)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def variance_curves(model: torch.nn.Module, cond: torch.Tensor, device: str, cfg: float) -> dict[str, list[dict]]:
    """The head's conditional variance per iteration, with the sampler's CFG ramp and without guidance."""
    return {f"cfg {s:g}": conditional_variance(model, cond.to(device), iterations=16, head_steps=50, samples=16,
                                               cfg_scale=s, generator=torch.Generator().manual_seed(99))
            for s in dict.fromkeys((cfg, 1.0))}


def judge(tokens: dict[str, torch.Tensor], cells: list[dict], scenes: list, tokenizer: torch.nn.Module) -> None:
    from fewstep.bench.dd.judge import Judge, to_image

    j = Judge(scenes)
    for cell in cells:
        cell |= j(to_image(tokenizer.decode_continuous(tokens[cell["method"]].float())))
        LOG.info("judged %s: FD %.2f acc %.3f", cell["method"], cell["fd_effnet"], cell["attribute_accuracy"])


def markdown(result: dict) -> str:
    lines = ["| sampler | AR iterations | head evals / img | sequential head calls | FD-EffNet ↓ | attribute acc. ↑ "
             f"| ms / img ({result['device']}, batch 1) |", "|---|---|---|---|---|---|---|"]
    for c in result["rows"]:
        lines.append(f"| {c['method']} | {c['iterations']} | {c['head_evals_per_image']} | "
                     f"{c['sequential_head_calls']} | {c.get('fd_effnet', float('nan')):.2f} | "
                     f"{c.get('attribute_accuracy', float('nan')):.3f} | {c['ms_per_image']:.0f} |")
    return "\n".join(lines)


def plots(result: dict, folder: Path) -> None:
    (folder / "disa_variance.svg").write_text(svg_plot(
        {name: [(v["progress"], v["variance"]) for v in var] for name, var in result["variance"].items()},
        title="MAR head: variance of the next tokens' conditional vs AR progress",
        xlabel="fraction of tokens already generated", ylabel="variance (tokenizer units²)"))
    if all("fd_effnet" in c for c in result["rows"]):
        const = [(c["head_evals_per_image"], c["fd_effnet"]) for c in result["rows"] if c["method"].startswith("constant")]
        disa = [(c["head_evals_per_image"], c["fd_effnet"]) for c in result["rows"] if c["method"].startswith("DiSA")]
        base = [(c["head_evals_per_image"], c["fd_effnet"]) for c in result["rows"] if c["method"].startswith("MAR")]
        (folder / "disa_fd_cost.svg").write_text(svg_plot(
            {"constant T (16 it)": sorted(const), "DiSA 50→5 (16 it)": sorted(disa), "MAR baseline": base},
            title="FD-EffNet vs head evaluations per image", xlabel="head evaluations per image (log)",
            ylabel="FD-EffNet", logx=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mar-dir", type=Path, default=None, help="folder with fewstep-tiny-mar/-vq (default: shipped)")
    p.add_argument("--captions", type=Path, default=None, help="caption-embedding cache (default: MiniLM here)")
    p.add_argument("--n", type=int, default=256, help="held-out captions (default 256)")
    p.add_argument("--cfg", type=float, default=2.0, help="head CFG scale, MAR's linear ramp (default 2.0)")
    p.add_argument("--out", type=Path, default=RESULTS / "disa.json", help="JSON path (or folder with --tokens-only)")
    p.add_argument("--tokens-only", action="store_true", help="generate + time only (GPU); judge later with --from")
    p.add_argument("--from", dest="src", type=Path, default=None, help="judge tokens written by --tokens-only")
    p.add_argument("--variance-only", action="store_true",
                   help="recompute the variance curves into an existing --out JSON and redraw the plots")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return run(args)


def run(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file, save_file

    from fewstep.nodes.zoo.ar.builtin import load_mar, load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.variance_only:
        result = json.loads(args.out.read_text())
        _, cond = captions(32, args.captions)
        result["variance"] = variance_curves(load_mar(args.mar_dir, device), cond, device, result["cfg"])
        args.out.write_text(json.dumps(result, indent=1))
        plots(result, args.out.parent)
        return 0
    tok = load_tokenizer(args.mar_dir)
    if args.src is not None:                                  # judge a GPU run's tokens here
        result = json.loads((args.src / "disa_rows.json").read_text())
        tokens = load_file(str(args.src / "disa_tokens.safetensors"))
        scenes, _ = captions(result["n"], args.captions)
    else:
        model = load_mar(args.mar_dir, device)
        scenes, cond = captions(args.n, args.captions)
        tokens, cells = generate(model, cond, device, args.cfg)
        result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "n": args.n, "cfg": args.cfg,
                  "rows": cells, "variance": variance_curves(model, cond[:32], device, args.cfg)}
        if args.tokens_only:
            args.out.mkdir(parents=True, exist_ok=True)
            save_file({k: v.half().contiguous() for k, v in tokens.items()}, str(args.out / "disa_tokens.safetensors"))
            (args.out / "disa_rows.json").write_text(json.dumps(result, indent=1))
            return 0
    judge(tokens, result["rows"], scenes, tok)
    out = args.out if args.out.suffix == ".json" else args.out / "disa.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plots(result, out.parent)
    print(markdown(result))  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
