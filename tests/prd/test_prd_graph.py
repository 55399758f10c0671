"""The PRD example graph and the trainer node through the executor on CPU: text → 4 steps → triplane → mesh →
GLB / previews; PRD Distill trains a tiny run with live loss and resumes it from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from fewstep.app.api import Paths

ROOT = Path(__file__).resolve().parents[2]


def _paths(tmp_path: Path) -> Paths:
    return Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                 input_dir=tmp_path / "in", user_dir=tmp_path / "user")


def _run(prompt: dict, paths: Paths, events: list):
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    return Executor(load_registry(), CacheSet(), paths).execute(
        prompt, prompt_id="prd", emit=lambda kind, data: events.append((kind, data)))


def test_prd_text_to_mesh_graph_saves_a_watertight_glb(tmp_path):
    paths = _paths(tmp_path)
    prompt = json.loads((ROOT / "graphs" / "prd_text_to_mesh.json").read_text())
    result = _run(prompt, paths, [])
    assert result.status == "success", result.error
    metrics = result.outputs["4"]["metrics"][0]
    assert metrics["watertight"] == 1.0 and metrics["non_empty"] == 1.0 and metrics["faces"] > 100
    assert (paths.output_dir / "mesh" / "prd_00001_.glb").stat().st_size > 1000
    assert len(list(paths.temp_dir.rglob("*.png"))) == 1                      # the four views, one image


def test_prd_distill_node_reports_loss_and_resumes(tmp_path):
    paths = _paths(tmp_path)
    prompt = {
        "1": {"class_type": "PRDLoadTeacher", "inputs": {}},
        "2": {"class_type": "PRDDistill", "inputs": {
            "teacher": ["1", 0], "caption_source": "list", "captions": "a red cube\na blue sphere", "k": 2,
            "lora": "shared", "lora_rank": 2, "steps": 2, "batch_size": 1, "learning_rate": 1e-3, "views": 2,
            "cfg": 7.5, "seed": 0, "run_name": "t", "checkpoint_every": 1, "preview_every": 0}},
        "3": {"class_type": "PRDTextToTriplane", "inputs": {"generator": ["2", 0], "text": "a red cube", "k": 2,
                                                            "seed": 0, "preview_size": 16}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }
    events: list = []
    first = _run(prompt, paths, events)
    assert first.status == "success", first.error
    progress = [d for kind, d in events if kind == "progress" and d["node"] == "2"]
    assert progress[-1]["value"] == progress[-1]["max"] == 2 and "loss" in progress[-1]
    losses = first.outputs["2"]["loss"]
    assert len(losses) == 2
    runs = list((paths.model_roots[0] / "checkpoints" / "prd").iterdir())
    assert len(runs) == 1 and (runs[0] / "step_00000002.safetensors").is_file()
    again = _run(prompt, paths, [])                                           # same settings: resumed, no step run
    assert again.status == "success" and again.outputs["2"]["loss"] == losses
