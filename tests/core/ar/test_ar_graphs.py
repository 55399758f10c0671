"""The example graphs graphs/ar_generate.json and graphs/ar_mar.json run through the executor on the shipped
weights (CPU, small batch): loader -> CLIPTextEncode -> sampler -> SaveImage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fewstep.app.api import Paths

ROOT = Path(__file__).resolve().parents[3]


def _executor(tmp_path: Path):
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in", user_dir=tmp_path / "user")
    return Executor(load_registry(), CacheSet(), paths)


@pytest.mark.parametrize(("name", "demo"), [("ar_generate", {"batch_size": 2}),
                                            ("ar_mar", {"batch_size": 2, "iterations": 4, "head_steps": 5})])
def test_example_graph_runs_to_saved_images(tmp_path, name, demo):
    graph = json.loads((ROOT / "graphs" / f"{name}.json").read_text())
    sampler = next(k for k, v in graph.items() if v["class_type"] in ("ARSampler", "MARSampler"))
    graph[sampler]["inputs"] |= demo
    result = _executor(tmp_path).execute(graph, prompt_id=name, emit=lambda kind, data: None)
    assert result.status == "success", result.error
    saved = sorted((tmp_path / "out").glob("*.png"))
    assert len(saved) == 2
    from PIL import Image

    assert Image.open(saved[0]).size == (64, 64)
