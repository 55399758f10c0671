"""The ATOP example graph through the executor on CPU (tiny settings): object → motion evidence → fit →
SaveGLB / previews; the GLB carries the fitted joint as a node animation and METRICS score the fit."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from fewstep.app.api import Paths

ROOT = Path(__file__).resolve().parents[2]


def _glb_json(path: Path) -> dict:
    """The JSON chunk of a GLB file (12-byte header, then chunk length, type 'JSON', payload)."""
    data = path.read_bytes()
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON"
    return json.loads(data[20:20 + length])


def test_atop_fit_graph_runs_and_exports_the_fitted_joint(tmp_path):
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in", user_dir=tmp_path / "user")
    prompt = json.loads((ROOT / "graphs" / "atop_fit.json").read_text())
    # the demo as shipped (3 views × 4 frames at 48 px, 4 restarts from 128 candidates, 60 steps per type);
    # 32 px evidence with 24 candidates left the lid on a wrong axis
    events: list = []
    result = Executor(load_registry(), CacheSet(), paths).execute(
        prompt, prompt_id="atop", emit=lambda kind, data: events.append((kind, data)))
    assert result.status == "success", result.error
    metrics = result.outputs["3"]["metrics"][0]
    assert metrics["joint_type"] == "revolute" and metrics["kind_correct"] == 1
    assert metrics["loss_revolute"] < metrics["loss_prismatic"]
    assert metrics["axis_error_deg"] < 5.0
    fit_progress = [d for kind, d in events if kind == "progress" and d["node"] == "3"]
    assert fit_progress[-1]["value"] == fit_progress[-1]["max"] == 120 and "loss" in fit_progress[-1]
    glb = _glb_json(paths.output_dir / "mesh" / "atop_fit_00001_.glb")
    assert len(glb["animations"]) == 1 and {c["target"]["path"] for c in glb["animations"][0]["channels"]} == {"rotation"}
    previews = sorted(p.name for p in paths.temp_dir.rglob("*.png"))
    assert len(previews) == 2 * 12                                  # evidence and fitted motion: 3 views × 4 frames
