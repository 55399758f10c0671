"""Offline hubs, single-threaded torch, and the toy PSO setting shared by this folder's tests."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_torch_thread: None) -> None:
    """Every test here runs under ``one_torch_thread``."""


@pytest.fixture()
def toy_pso(toy: Any) -> dict[str, Any]:
    """The Gaussian-mixture toy as a PSO problem: a fresh student (teacher + zero MLP residual, only the MLP
    trainable), a frozen reference copy, a one-prompt pool (group 0) and a reward preferring mode 0.

    Group 0 has four modes (radius 2, 90° apart); the reward is minus the distance of the final sample to mode 0,
    so "better" is known exactly.
    """
    import torch

    from fewstep.nodes.core.train.toy import toy_pool
    from fewstep.nodes.core.train.vp import VPNet

    _, student, _, _ = toy
    net = copy.deepcopy(student.net)
    for p in net.teacher.parameters():
        p.requires_grad_(False)
    policy = VPNet(net, student.schedule, student.prediction_type)
    reference = VPNet(copy.deepcopy(net).requires_grad_(False), student.schedule, student.prediction_type)
    pool = toy_pool()
    pool.cond, pool.prompts = pool.cond[:1], ["g0"]
    mode0 = net.teacher.means[0]

    def reward(x: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return -(x - mode0).norm(dim=1)

    return {"policy": policy, "reference": reference, "pool": pool, "reward": reward, "mode0": mode0,
            "timesteps": [999, 749, 499, 124]}
