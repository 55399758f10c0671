"""R0 through the engine: the example training graph runs on CPU (tiny settings), checkpoints, reports loss and
reward progress, samples the student with the SAMPLER and SIGMAS it outputs, and scores it; the default graph
samples the shipped student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fewstep.app.api import Paths

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("peft")


def _executor(tmp_path: Path):
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in", user_dir=tmp_path / "user")
    return Executor(load_registry(), CacheSet(), paths), paths


def test_r0_train_graph_trains_checkpoints_samples_and_scores(tmp_path):
    prompt = json.loads((ROOT / "graphs" / "r0_train.json").read_text())
    # tiny: 2 steps of batch 1, 2 sampler steps, no CFG, the probe reward only (the scorer's 224-px EfficientNet
    # backward is the slow part on CPU; it is exercised by tests/rewards)
    prompt["10"]["inputs"] |= {"steps": 2, "batch_size": 1, "sampler_steps": 2, "cfg": 1.0, "checkpoint_every": 1,
                               "prompt_count": 8, "reward_1": ["31", 0]}
    del prompt["10"]["inputs"]["reward_2"]
    prompt["22"]["inputs"]["cfg"] = 1.0
    executor, paths = _executor(tmp_path)
    events: list = []
    result = executor.execute(prompt, prompt_id="r0", emit=lambda kind, data: events.append((kind, data)))
    assert result.status == "success", result.error
    assert (paths.output_dir / "r0_train_00001_.png").is_file()
    run = next((tmp_path / "models" / "checkpoints" / "r0").iterdir())
    assert run.name.startswith("r0-example-")
    assert sorted(p.name for p in run.glob("*.safetensors")) == ["step_00000001.safetensors", "step_00000002.safetensors"]
    trainer = [d for kind, d in events if kind == "progress" and d["node"] == "10"]
    rewards = [d for d in trainer if "reward" in d]
    assert [d["value"] for d in rewards] == [1, 2] and all(d["reward"] <= 0.0 for d in rewards)  # probe log-prob
    assert [d["value"] for d in trainer if "loss" in d] == [1, 2]
    assert len(result.outputs["10"]["loss"]) == 2
    metrics = result.outputs["11"]["metrics"][0]
    assert metrics["n"] == 1 and metrics["reward_mean"] <= 0.0


def test_r0_default_graph_samples_the_shipped_student(tmp_path):
    from fewstep.nodes.r0.students import shipped_students

    if "fewstep-r0-r0-student.safetensors" not in shipped_students():
        pytest.skip("the R0 student is not shipped in this checkout")
    prompt = json.loads((ROOT / "graphs" / "r0_default.json").read_text())
    executor, paths = _executor(tmp_path)
    result = executor.execute(prompt, prompt_id="d")
    assert result.status == "success", result.error
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(paths.output_dir / "r0_00001_.png"), dtype=np.float32)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 10
