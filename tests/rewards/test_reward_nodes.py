"""Reward nodes through the engine: registered, combined, scored on a loaded image (METRICS); the scorer
reward on real renders."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from fewstep.app.api import Paths
from fewstep.nodes.zoo import data


def _executor(tmp_path: Path):
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in", user_dir=tmp_path / "user")
    return Executor(load_registry(), CacheSet(), paths), paths


def test_graph_scores_a_render_with_combined_rewards(tmp_path):
    executor, paths = _executor(tmp_path)
    scene = data.make_split("heldout", 1, seed=0)[0]
    paths.input_dir.mkdir(parents=True)
    data.render(scene).save(paths.input_dir / "scene.png")
    caption = data.caption(scene)
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "scene.png"}},
        "2": {"class_type": "ProbeReward", "inputs": {}},
        "3": {"class_type": "SaturationReward", "inputs": {"eps": 0.01}},
        "4": {"class_type": "CombineRewards", "inputs": {"reward_1": ["2", 0], "weight_1": 1.0,
                                                         "reward_2": ["3", 0], "weight_2": 0.5,
                                                         "normalize_grads": True}},
        "5": {"class_type": "RewardScore", "inputs": {"images": ["1", 0], "reward": ["4", 0], "prompts": caption}},
        "6": {"class_type": "RewardScore", "inputs": {"images": ["1", 0], "reward": ["3", 0], "prompts": caption}},
    }
    result = executor.execute(graph, prompt_id="r")
    assert result.status == "success", result.error
    combined, saturation = result.outputs["5"]["metrics"][0], result.outputs["6"]["metrics"][0]
    assert combined["n"] == 1 and -0.05 < combined["1:ProbeReward_mean"] <= 0.0
    assert combined["2:SaturationReward_mean"] == pytest.approx(saturation["reward_mean"])
    assert combined["reward_mean"] == pytest.approx(combined["1:ProbeReward_mean"] + 0.5 * saturation["reward_mean"],
                                                    abs=1e-6)


def test_reward_score_rejects_a_prompt_count_that_does_not_match(tmp_path):
    from fewstep.nodes.core.rewards import SaturationReward
    from fewstep.nodes.rewards.nodes import RewardScore

    with pytest.raises(ValueError, match=r"RewardScore: 2 prompt lines for 3 images"):
        RewardScore.execute(images=torch.rand(3, 8, 8, 3), reward=SaturationReward(), prompts="a\nb")


def test_scorer_reward_prefers_true_captions_and_has_image_gradients(renders):
    from fewstep.nodes.core.rewards import ScorerReward

    images, scenes, captions = renders
    images, scenes, captions = images[:4], scenes[:4], captions[:4]
    rng = random.Random(1)
    wrong = [data.caption(data.perturb(s, rng)) for s in scenes]
    reward = ScorerReward()
    x = images.clone().requires_grad_(True)
    true = reward(x, captions)
    true.sum().backward()
    assert x.grad.abs().sum() > 0
    with torch.no_grad():
        assert (true.detach() > reward(images, wrong)).all()
