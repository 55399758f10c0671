"""Helpers of the tests that run a video graph (graphs/*.json) through the engine on a tiny random video DiT
(tests/zoo/video/test_graph.py, tests/tdm/test_tdm_video_graph.py). Import it by name, as ``tests/conftest.py``
imports ``pg_cluster``: ``from video_graphs import ...``. torch and the engine are imported inside the helpers.

A test module wraps :func:`use_tiny_video_weights` in its own fixture::

    @pytest.fixture()
    def tiny_weights(tmp_path, monkeypatch):
        return use_tiny_video_weights(tmp_path, monkeypatch)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def use_tiny_video_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A random 'test'-preset DiT (seed 0, weights + 0.05 N(0, 1) so the zero-initialised output layer is not
    zero) saved as fewstep-tiny-video.safetensors in ``tmp_path / "weights"``, the folder the loader then reads."""
    import torch

    from fewstep.nodes.zoo.video import model as video_model
    from fewstep.nodes.zoo.video import train
    from fewstep.nodes.zoo.video.dit import PRESETS, VideoDiT

    torch.manual_seed(0)
    dit = VideoDiT(PRESETS["test"])
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path / "weights"
    train.save_outputs(folder, train.VideoTrainConfig(dit_preset="test"), {}, dit, None)
    monkeypatch.setattr(video_model, "weights_dir", lambda: folder)
    return folder


def graph_executor(tmp_path: Path) -> Any:
    """An engine ``Executor`` over every registered node, its models, outputs and inputs under ``tmp_path``
    (a new one per call: a second executor on the same folders sees the first one's checkpoints)."""
    from fewstep.app.api import Paths
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in", user_dir=tmp_path / "user")
    return Executor(load_registry(), CacheSet(), paths)


def load_graph(name: str) -> dict[str, Any]:
    """The API-format graph ``graphs/<name>.json`` of the repository."""
    return json.loads((ROOT / "graphs" / f"{name}.json").read_text())


def saved_video(tmp_path: Path, result: Any, node: str) -> Any:
    """The first clip the SaveVideo ``node`` wrote in a run by :func:`graph_executor`, read back as a ``Video``."""
    from fewstep.nodes.core.video_io import load_video

    saved = result.outputs[node]["images"][0]
    return load_video(tmp_path / "out" / saved["subfolder"] / saved["filename"])


def progress_values(events: list[tuple[str, dict[str, Any]]], node: str) -> list[Any]:
    """The progress values ``node`` reported, in order, from the executor's ``emit(kind, data)`` events."""
    return [data["value"] for kind, data in events if kind == "progress" and data["node"] == node]
