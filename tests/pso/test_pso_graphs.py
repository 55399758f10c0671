"""Graph-level CPU runs of the two example graphs on the built-in student (tiny settings): PSO trains through the
engine with live loss progress and checkpoints into the models folder, and the tuned MODEL samples an image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fewstep.app.api import Paths

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("diffusers")
pytest.importorskip("peft")


def _executor(tmp_path: Path):
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in", user_dir=tmp_path / "user")
    return Executor(load_registry(), CacheSet(), paths), paths


# the offline graph's trainer is covered fast on a tiny model (test_tiny_graph.py); this is the shipped example
@pytest.mark.parametrize("name", ["pso_online", pytest.param("pso_offline", marks=pytest.mark.slow)])
def test_pso_graph_trains_checkpoints_and_samples(tmp_path, name):
    from fewstep.nodes.mlcm.students import shipped_students

    if "fewstep-mlcm-student.safetensors" not in shipped_students():
        pytest.skip("the MLCM student is not shipped in this checkout")
    prompt = json.loads((ROOT / "graphs" / f"{name}.json").read_text())
    prompt["10"]["inputs"] |= {"steps": 2, "batch_size": 1, "checkpoint_every": 1}
    executor, paths = _executor(tmp_path)
    events: list = []
    result = executor.execute(prompt, prompt_id="p", emit=lambda kind, data: events.append((kind, data)))
    assert result.status == "success", result.error
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(paths.output_dir / f"{name}_00001_.png"), dtype=np.float32)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 10
    runs = list((tmp_path / "models" / "checkpoints" / "pso").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith(prompt["10"]["inputs"]["run_name"])
    assert sorted(p.name for p in runs[0].glob("*.safetensors")) == ["step_00000001.safetensors",
                                                                       "step_00000002.safetensors"]
    trainer = [d for kind, d in events if kind == "progress" and d["node"] == "10"]
    assert [d["value"] for d in trainer] == [1, 2] and all(d["loss"] >= 0 for d in trainer)
    assert len(result.outputs["10"]["loss"]) == 2


def test_pso_default_graph_samples_the_shipped_adapter(tmp_path):
    from fewstep.nodes.pso.students import shipped_adapters

    if "fewstep-pso-online.safetensors" not in shipped_adapters():
        pytest.skip("the PSO adapter is not shipped in this checkout")
    prompt = json.loads((ROOT / "graphs" / "pso_default.json").read_text())
    executor, paths = _executor(tmp_path)
    result = executor.execute(prompt, prompt_id="d")
    assert result.status == "success", result.error
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(paths.output_dir / "pso_default_00001_.png"), dtype=np.float32)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 10
