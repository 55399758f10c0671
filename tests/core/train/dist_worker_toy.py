"""A torchrun worker for the data-parallel tests: a toy regression through ``fit`` (run by ``launch`` or directly).

python dist_worker_toy.py OUT_DIR [--steps N] [--batch B] [--every E] [--data draws|fixed] [--device cpu|cuda]
                           [--die-rank R --die-step K] [--preview-every P]

``--data draws``: each rank draws its share of the batch from its step generator (the trainers' way);
``fixed``: the global batch of step n is fixed and rank r takes rows r·B/N ... (r+1)·B/N - 1, so a 2-process run
must reproduce the 1-process run's weights exactly. ``--device cuda``: rank r trains on cuda:LOCAL_RANK (NCCL). Each rank writes ``rank<r>.json`` (losses, weights, resume step, who wrote the shared file).
``--die-rank/--die-step``: that rank kills itself with SIGKILL at that step (a worker dying mid-run).
``--param-dtype bfloat16``: FSDP gathers the weights in bf16 for compute (MixedPrecisionPolicy).
``--preview-every P``: a preview (the student's output at a fixed input) every P steps, recorded by rank 0.
``$FEWSTEP_SHARD=fsdp`` trains the student sharded (FSDP2); ``plain`` in the JSON says whether the student came back
as the plain module it was built as (classes, no DTensor parameters, no FSDP hooks).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from fewstep.nodes.core.train.distributed import current_world, leave, local_batch_size, main_rank_first
from fewstep.nodes.core.train.loop import EMA, Checkpointer, FitSpec, fit


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--every", type=int, default=0)
    parser.add_argument("--data", choices=("draws", "fixed"), default="draws")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--die-rank", type=int, default=-1)
    parser.add_argument("--die-step", type=int, default=-1)
    parser.add_argument("--preview-every", type=int, default=0)
    parser.add_argument("--param-dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args(argv)
    shared = args.out / "shared.txt"              # a dataset-like file: written once, by rank 0, read by all
    with main_rank_first("cpu") as world:
        found = shared.exists()
        if not found:
            shared.write_text(f"written by rank {world.rank}")
    device = "cpu"
    if args.device == "cuda":                                  # one process per GPU, as fewstep run --nproc
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        device = f"cuda:{torch.cuda.current_device()}"
    torch.manual_seed(1234 + int(os.environ.get("RANK", "0")))   # ranks start different: DDP must sync them
    student = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    target = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    student, target = student.to(device), target.to(device)
    ema = EMA(student, target, 0.9)
    optimizer = torch.optim.AdamW(student.parameters(), lr=0.05, weight_decay=0.0)
    w_true = torch.tensor([[1.0], [-2.0], [0.5], [3.0]], device=device)

    def step_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        world = current_world()
        if world.rank == args.die_rank and step == args.die_step:
            os.kill(os.getpid(), signal.SIGKILL)
        b = local_batch_size(args.batch)
        if args.data == "fixed":
            x = torch.randn(args.batch, 4, generator=torch.Generator().manual_seed(step))
            x = x[world.rank * b:(world.rank + 1) * b].to(device)
        else:
            x = torch.randn(b, 4, generator=gen, device=gen.device)
        return ((student(x) - x @ w_true) ** 2).mean()

    ckpt = Checkpointer(args.out / "ckpt", every=args.every) if args.every else None
    spec = FitSpec(total_steps=args.steps, seed=3, lr_at=lambda step: 0.05, grad_clip=1.0, checkpointer=ckpt,
                   device=device, preview_every=args.preview_every,
                   param_dtype=None if args.param_dtype == "float32" else getattr(torch, args.param_dtype))
    previews: list[float] = []

    def preview_fn(step: int) -> float:
        with torch.no_grad():
            previews.append(float(student(torch.ones(2, 4, device=device)).sum()))
        return previews[-1]

    layers = list(student.children())
    state = fit(student, optimizer, step_fn, spec, target=target, ema=ema, preview_fn=preview_fn)
    world = current_world()
    fresh = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))        # what an untouched one holds
    plain = (type(student) is nn.Sequential and list(student.children()) == layers
             and all(type(m) is type(f) and m.__dict__.keys() == f.__dict__.keys()
                     and not (m._forward_pre_hooks or m._forward_hooks or m._state_dict_pre_hooks
                              or m._load_state_dict_pre_hooks or m._load_state_dict_post_hooks)
                     for m, f in zip(student.modules(), fresh.modules(), strict=True))
             and all(type(p) is nn.Parameter for p in student.parameters()))
    weights = torch.cat([p.detach().reshape(-1) for p in student.parameters()]).tolist()
    ema_weights = torch.cat([p.detach().reshape(-1) for p in target.parameters()]).tolist()
    (args.out / f"rank{world.rank}.json").write_text(json.dumps(
        {"losses": state.losses, "weights": weights, "ema": ema_weights, "resumed_from": state.resumed_from,
         "world": world.size, "plain": plain, "previews": previews, "shared_found": found, "shared": shared.read_text()}))
    leave()                                                    # as fewstep run ends a worker
    return 0


if __name__ == "__main__":
    from fewstep.app.launch import exit_worker

    exit_worker(main(sys.argv[1:]))        # as fewstep run ends a worker
