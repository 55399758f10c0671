"""Resume: an online PSO run interrupted after its step-2 checkpoint and re-run continues exactly like an
uninterrupted run (every draw of step n comes from (seed, n); core trainer)."""

from __future__ import annotations

import copy

import torch

from fewstep.nodes.core.train.loop import Checkpointer, trainable_parameters
from fewstep.nodes.core.train.vp import VPNet
from fewstep.nodes.pso.train import make_step, preset, train


def _run(toy_pso, policy, folder, total_steps):
    cfg = preset("online", steps=4, batch_size=8, lr=1e-2, timesteps=(999, 499))
    step = make_step(cfg, policy, toy_pso["reference"], pool=toy_pso["pool"], reward=toy_pso["reward"],
                     decode=lambda x: x)
    return train(policy.net, step, cfg, checkpointer=Checkpointer(folder, every=2), total_steps=total_steps)


def test_resumed_run_equals_the_uninterrupted_run(toy_pso, tmp_path):
    start = copy.deepcopy(toy_pso["policy"].net)
    full = _run(toy_pso, toy_pso["policy"], tmp_path / "full", 4)

    fresh = VPNet(copy.deepcopy(start), toy_pso["policy"].schedule, toy_pso["policy"].prediction_type)
    first = _run(toy_pso, fresh, tmp_path / "split", 2)                   # "interrupted" after step 2
    again = VPNet(copy.deepcopy(start), fresh.schedule, fresh.prediction_type)   # a new process: weights reset
    resumed = _run(toy_pso, again, tmp_path / "split", 4)

    assert resumed.resumed_from == 2 and len(first.losses) == 2
    assert resumed.losses == full.losses
    for (name, a), b in zip(trainable_parameters(again.net).items(), trainable_parameters(toy_pso["policy"].net).values(),
                            strict=True):
        assert torch.equal(a, b), name
