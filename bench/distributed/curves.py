"""Every trainer node, 1 process vs ``fewstep run --nproc 2`` at equal global batch: do the loss curves agree?

    fewstep bench distributed --out bench/distributed/results/curves.json          # CPU, gloo, ~15 min

For each trainer graph (MLCM, SLAM, TDM, R0, PSO online, DD) three headless runs of the same graph: 1 process
seed 0, 1 process seed 1 (the noise reference: a run that differs only in its random draws) and 2 processes
seed 0 (each rank trains batch_size / 2 of the same global batch). Each run's per-step losses come from its
final checkpoint (the loss recorded there is the rank-mean, i.e. the global-batch loss). Compared: the mean
loss over the first and last third of the steps, and the paired difference of the curves step by step,
d_n = L'_n - L_n against the 1-process seed-0 curve L, as z = mean(d) / (std(d) / sqrt(n)): |z| of the 2-process
run should look like |z| of the seed-1 run (same distribution of runs), not larger.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fewstep import shipped_dir


@dataclass(frozen=True)
class Trainer:
    """A trainer graph: its file (or an inline API prompt), the trainer node and the widget values to set."""

    name: str
    node: str
    sets: dict[str, object]
    graph: str = ""
    prompt: dict[str, object] = field(default_factory=dict)


def _dd_prompt() -> dict[str, object]:
    """AR teacher -> DD pair dataset (256 pairs) -> DD Train (no DD training graph is shipped)."""
    return {
        "1": {"class_type": "LoadBuiltinARModel", "inputs": {"model_name": "fewstep-tiny-ar"}},
        "2": {"class_type": "DDPairDataset", "inputs": {
            "ar_model": ["1", 0], "clip": ["1", 2], "prompt_source": "procedural", "prompts": "", "prompt_count": 64,
            "pair_count": 256, "cfg": 3.0, "flow_steps": 8, "seed": 0, "name": "bench-pairs"}},
        "3": {"class_type": "DDTrain", "inputs": {
            "ar_model": ["1", 0], "pairs": ["2", 0], "steps": 10, "batch_size": 16, "learning_rate": 1e-3,
            "step_set": "0,24", "cont_weight": 0.1, "patch_weight": 0.0, "ema_decay": 0.995, "seed": 0,
            "run_name": "dd-bench", "checkpoint_every": 0}},
    }


TRAINERS = (
    Trainer("MLCM", "10", {"steps": 30, "batch_size": 8, "prompt_count": 64}, graph="mlcm_distill.json"),
    Trainer("SLAM", "10", {"steps": 30, "batch_size": 8, "prompt_count": 64}, graph="slam_distill.json"),
    Trainer("TDM", "10", {"steps": 30, "batch_size": 8, "prompt_count": 64}, graph="tdm_distill.json"),
    Trainer("R0", "10", {"steps": 20, "batch_size": 4, "prompt_count": 64}, graph="r0_train.json"),
    Trainer("PSO", "10", {"steps": 20, "batch_size": 4, "prompt_count": 64}, graph="pso_online.json"),
    Trainer("DD", "3", {"steps": 60, "batch_size": 32}, prompt=_dd_prompt()),
)


def run_losses(trainer: Trainer, nproc: int, seed: int, home: Path, timeout: float) -> tuple[list[float], float]:
    """Run the trainer's graph once (its own home folder); the per-step losses of its final checkpoint + seconds."""
    from fewstep.nodes.core.train.loop import Checkpointer

    graph = shipped_dir("graphs") / trainer.graph if trainer.graph else home / "graph.json"
    if trainer.prompt:
        home.mkdir(parents=True, exist_ok=True)
        graph.write_text(json.dumps(trainer.prompt))
    sets = {**trainer.sets, "seed": seed, "checkpoint_every": 0}
    args = [a for k, v in sets.items() for a in ("--set", f"{trainer.node}.{k}={v}")]
    cmd = [sys.executable, "-m", "fewstep.app.cli", "run", str(graph), "--home", str(home), "--nproc", str(nproc),
           "--target", trainer.node, *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{trainer.name} ({nproc} processes) failed:\n{proc.stderr[-3000:]}")
    found = sorted((home / "models" / "checkpoints").glob("*/*/step_*.safetensors"))
    if not found:
        raise RuntimeError(f"{trainer.name}: no checkpoint under {home}/models/checkpoints")
    return [float(x) for x in Checkpointer.load(found[-1]).meta["losses"]], seconds


def paired_z(ref: list[float], other: list[float]) -> float:
    """mean(d) / (std(d) / sqrt(n)) of the step-by-step difference d = other - ref."""
    d = [b - a for a, b in zip(ref, other, strict=True)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / max(n - 1, 1)
    return mean / math.sqrt(var / n) if var > 0 else 0.0


def thirds(losses: list[float]) -> tuple[float, float]:
    k = max(1, len(losses) // 3)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def compare(trainer: Trainer, root: Path, timeout: float) -> dict[str, object]:
    runs = {}
    for label, nproc, seed in (("1p_seed0", 1, 0), ("1p_seed1", 1, 1), ("2p_seed0", 2, 0)):
        losses, seconds = run_losses(trainer, nproc, seed, root / f"{trainer.name}-{label}", timeout)
        first, last = thirds(losses)
        runs[label] = {"losses": losses, "first_third": first, "last_third": last, "seconds": round(seconds, 1)}
    ref = runs["1p_seed0"]["losses"]
    return {"trainer": trainer.name, "sets": trainer.sets, "runs": runs,
            "z_seed1_vs_seed0": paired_z(ref, runs["1p_seed1"]["losses"]),
            "z_2proc_vs_1proc": paired_z(ref, runs["2p_seed0"]["losses"])}


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| trainer | steps x global batch | 1 proc seed 0 (first / last third) | 1 proc seed 1 | "
             "2 proc seed 0 | paired z: seed 1 vs seed 0 | paired z: 2 proc vs 1 proc |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        runs, sets = row["runs"], row["sets"]
        cells = [f"{runs[k]['first_third']:.4f} / {runs[k]['last_third']:.4f}" for k in ("1p_seed0", "1p_seed1",
                                                                                          "2p_seed0")]
        lines.append(f"| {row['trainer']} | {sets['steps']} x {sets['batch_size']} | {' | '.join(cells)} | "
                     f"{row['z_seed1_vs_seed0']:+.2f} | {row['z_2proc_vs_1proc']:+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fewstep bench distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default: print only)")
    parser.add_argument("--only", action="append", default=None, help="trainer name(s) to run (default: all)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run (default 900)")
    args = parser.parse_args(argv)
    chosen = [t for t in TRAINERS if args.only is None or t.name in args.only]
    if not chosen:
        raise ValueError(f"--only names none of {[t.name for t in TRAINERS]}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fewstep-dp-bench-") as tmp:
        for trainer in chosen:
            rows.append(compare(trainer, Path(tmp), args.timeout))
            print(table(rows[-1:]).splitlines()[-1], flush=True)  # noqa: T201 (progress of a long bench)
    print(table(rows))  # noqa: T201
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_count": os.cpu_count(),
                "backend": "gloo (CPU)", "command": "fewstep bench distributed " + " ".join(argv or sys.argv[1:])}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
