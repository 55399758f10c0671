"""The measurement behind R0's λ: the reward gradient's norm on the LoRA parameters at initialisation.

    OMP_NUM_THREADS=1 python -m fewstep.bench.r0.calibrate --batch 4        # CPU, ~1 min

For each arm given, one R0 loss on a batch of procedural prompts (fixed η = 0, weight regulariser off), then
‖∇_θ J‖ over the trainable (LoRA) parameters and ‖θ0‖ over the trained layers. With peft's initialisation the
regulariser's gradient is ≈ 1.15 λ sqrt(d) / ‖θ0‖ at relative drift d, so it balances the reward's at
d ≈ (‖∇J‖ ‖θ0‖ / (1.15 λ))² (see fewstep/nodes/r0/README.md, "What is ours").
"""

from __future__ import annotations

import argparse
import copy
import json

import torch


def measure(arm_name: str, batch: int) -> dict[str, float]:
    from fewstep.bench.r0.students import reward_library
    from fewstep.nodes.core.train.adapter import UNetAdapter
    from fewstep.nodes.core.train.builtin import teacher_schedule, teacher_unet
    from fewstep.nodes.core.train.loop import trainable_parameters
    from fewstep.nodes.core.train.prompts import procedural_pool
    from fewstep.nodes.core.train.vp import VPNet
    from fewstep.nodes.r0.loss import R0Batch, R0Loss
    from fewstep.nodes.r0.regularizers import WeightDrift
    from fewstep.nodes.r0.train import arm, make_rewards, prepare_student, vae_decoder
    from fewstep.nodes.zoo.builtin import load_vae
    from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder

    cfg = arm(arm_name, batch_size=batch)
    enc = MiniLMTextEncoder.from_package("cpu")
    net = prepare_student(UNetAdapter(copy.deepcopy(teacher_unet("cpu")).float()), cfg)
    student = VPNet(net, teacher_schedule(), "eps")
    pool = procedural_pool(enc, 64, 0, "cpu")
    vae, scale = load_vae("cpu", lean=False)
    drift = WeightDrift(net)
    loss_fn = R0Loss(objective=make_rewards(cfg, reward_library("cpu", enc)).objective, decode=vae_decoder(vae, scale),
                     guidance=cfg.guidance, random_eta=False, drift=drift)
    gen = torch.Generator().manual_seed(0)
    loss_fn(student, R0Batch(pool.prompts[:batch], pool.cond[:batch], pool.uncond, (batch, 4, 16, 16), gen)).backward()
    grads = [p.grad for p in trainable_parameters(net).values() if p.grad is not None]
    return {"grad_norm": float(torch.sqrt(sum((g**2).sum() for g in grads))), "theta0_norm": drift.norm0**0.5,
            **loss_fn.last}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.r0.calibrate", description=__doc__.split("\n")[0])
    p.add_argument("--arms", nargs="*", default=["none", "full"])
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps({name: measure(name, args.batch) for name in args.arms}, indent=1))  # noqa: T201 — the output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
