"""Graph-level runs through the engine: distil → sample on CPU, checkpoints into the models folder, resume,
live loss progress; the MLCM-student default graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fewstep.app.api import Paths

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("diffusers")


def _executor(tmp_path: Path):
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in", user_dir=tmp_path / "user")
    return Executor(load_registry(), CacheSet(), paths), paths


def _tiny(graph: dict, steps: int = 4) -> dict:
    graph["10"]["inputs"] |= {"steps": steps, "batch_size": 2, "prompt_count": 8, "checkpoint_every": 2}
    return graph


@pytest.mark.parametrize("name", ["mlcm_distill", pytest.param("slam_distill", marks=pytest.mark.slow)])
def test_distill_then_sample_graph_runs_and_checkpoints(tmp_path, name):
    prompt = _tiny(json.loads((ROOT / "graphs" / f"{name}.json").read_text()))
    executor, paths = _executor(tmp_path)
    events: list = []
    result = executor.execute(prompt, prompt_id="p1", emit=lambda kind, data: events.append((kind, data)))
    assert result.status == "success", result.error
    assert (paths.output_dir / f"{prompt['9']['inputs']['filename_prefix']}_00001_.png").is_file()
    runs = list((tmp_path / "models" / "checkpoints" / "distill").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith(prompt["10"]["inputs"]["run_name"])
    assert sorted(p.name for p in runs[0].glob("*.safetensors")) == ["step_00000002.safetensors",
                                                                       "step_00000004.safetensors"]
    trainer = [d for kind, d in events if kind == "progress" and d["node"] == "10"]
    assert [d["value"] for d in trainer] == [1, 2, 3, 4]
    assert all(d["loss"] >= 0 and d["lr"] == pytest.approx(1e-4) for d in trainer)
    assert len(result.outputs["10"]["loss"]) == 4


@pytest.mark.slow  # resume is covered fast by tests/trainer; this is the same through the engine
def test_rerunning_the_graph_resumes_from_the_checkpoint(tmp_path):
    from fewstep.nodes.core.train.loop import Checkpointer

    executor, _ = _executor(tmp_path)
    first = _tiny(json.loads((ROOT / "graphs" / "mlcm_distill.json").read_text()), steps=2)
    assert executor.execute(first, prompt_id="a").status == "success"
    # a fresh executor (no output cache) on the same graph finds the run folder and resumes from its last
    # checkpoint (step 2 of 2), so it trains nothing new and still returns the student
    executor2, _ = _executor(tmp_path)
    events: list = []
    result = executor2.execute(first, prompt_id="b", emit=lambda kind, data: events.append((kind, data)))
    assert result.status == "success"
    assert not [d for kind, d in events if kind == "progress" and d["node"] == "10"]   # nothing left to train
    run = next((tmp_path / "models" / "checkpoints" / "distill").iterdir())
    assert Checkpointer.load(Checkpointer(run).latest()).step == 2


def test_mlcm_default_graph_samples_the_shipped_student(tmp_path):
    from fewstep.nodes.mlcm.students import shipped_students

    if "fewstep-mlcm-student.safetensors" not in shipped_students():
        pytest.skip("the MLCM student is not shipped in this checkout")
    prompt = json.loads((ROOT / "graphs" / "mlcm_default.json").read_text())
    executor, paths = _executor(tmp_path)
    result = executor.execute(prompt, prompt_id="d")
    assert result.status == "success", result.error
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(paths.output_dir / "fewstep_00001_.png"), dtype=np.float32)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 10
