"""docs/comfyui-nodes.md is what ``python -m fewstep.bench.comfy_nodes`` generates from the registry now, and
the template-coverage command reads wheels and folders (issue #15)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from fewstep.bench import comfy_nodes, comfy_templates


def test_node_status_page_is_current() -> None:
    assert comfy_nodes.main(["--check"]) == 0, "run: python -m fewstep.bench.comfy_nodes --write"


def test_every_core_node_has_a_status() -> None:
    page = comfy_nodes.PAGE.read_text()
    for name in ("KSampler", "ControlNetApplyAdvanced", "LatentUpscale", "SamplerCustom"):
        assert f"| `{name}` | done |" in page
    assert "| `OpenAIDalle3` | not planned: paid cloud-API node" in page


def test_template_survey_counts_valid_and_missing(tmp_path: Path) -> None:
    ok = {"nodes": [{"id": 1, "type": "EmptyLatentImage", "inputs": [], "mode": 0,
                     "outputs": [{"name": "LATENT", "type": "LATENT", "links": []}], "widgets_values": [64, 64, 1]},
                    {"id": 2, "type": "PreviewAny", "mode": 0, "inputs": [{"name": "source", "type": "*", "link": 1}],
                     "outputs": [], "widgets_values": []}],
          "links": [[1, 1, 0, 2, 0, "*"]]}
    missing = {"nodes": [{"id": 1, "type": "NoSuchNode", "mode": 0, "inputs": [], "outputs": []}], "links": []}
    with zipfile.ZipFile(tmp_path / "comfyui_workflow_templates-9.9.9-py3-none-any.whl", "w") as wheel:
        wheel.writestr("comfyui_workflow_templates/templates/default.json", json.dumps(ok))
        wheel.writestr("comfyui_workflow_templates/templates/other.json", json.dumps(missing))
        wheel.writestr("comfyui_workflow_templates/templates/index.json", "[]")
    from fewstep.app.registry import load_registry

    report = comfy_templates.survey(tmp_path, load_registry(entry_points=False))
    assert report["release"] == "9.9.9" and report["templates"] == 2 and report["validate"] == 1
    assert report["missing_nodes"] == [("NoSuchNode", 1)] and report["sd_basics"] == {"default": "ok"}
