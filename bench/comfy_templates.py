"""How many of ComfyUI's official workflow templates fewstep accepts, per release.

    python -m fewstep.bench.comfy_templates FOLDER [FOLDER ...] [--top 25] [--json OUT.json]

Each FOLDER is one release: the ``comfyui-workflow-templates`` wheels of that release (``pip download
--no-deps``; since 0.2 the templates live in the ``comfyui-workflow-templates-json`` / ``-core`` wheels the
meta package pins) or an unpacked copy. This command installs and downloads nothing. Every UI workflow
found under a ``templates/`` folder is converted to the API format (``app.workflow.ui_to_api``) and
validated (``app.validation.validate_prompt``) against the full registry, with empty placeholder files
standing in for the models and input images the template names (so only node types, links and widget
values decide). Reported per release: templates that validate, those that fail for missing node types,
the node types missing most often (counted once per template), and the SD1.5 / SDXL basics of issue #15
one by one.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The SD1.5 / SDXL templates built from ComfyUI's core nodes only (issue #15, goal 1), by file stem.
SD_BASICS = (
    "default", "image2image", "inpaint_example", "inpaint_model_outpainting", "hiresfix_latent_workflow",
    "hiresfix_esrgan_workflow", "esrgan_example", "latent_upscale_different_prompt_model", "area_composition",
    "area_composition_square_area_for_subject", "controlnet_example", "depth_controlnet", "depth_t2i_adapter",
    "mixing_controlnets", "2_pass_pose_worship", "embedding_example", "lora", "lora_multiple",
    "sdxl_simple_example", "sdxl_refiner_prompt_example", "sdxlturbo_example",
)
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
_VERSION = re.compile(r"^(comfyui_workflow_templates(?:_[a-z]+)?)-([^-]+)-")


@dataclass
class Outcome:
    """One template's result: ``ok``, or the reason (``missing_nodes`` lists unknown class types)."""

    name: str
    ok: bool
    reason: str = ""
    missing_nodes: list[str] = field(default_factory=list)


def _workflows(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(stem, workflow) for every UI workflow under a templates/ folder of the wheels or files in ``folder``."""
    seen: set[str] = set()

    def keep(path: str, raw: bytes) -> tuple[str, dict[str, Any]] | None:
        stem = Path(path).stem
        if "/templates/" not in "/" + path or not path.endswith(".json") or stem in seen:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data:
            seen.add(stem)
            return stem, data
        return None

    for wheel in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for member in sorted(archive.namelist()):
                if member.endswith(".json") and (found := keep(member, archive.read(member))):
                    yield found
    for path in sorted(folder.rglob("*.json")):
        if found := keep(path.relative_to(folder).as_posix(), path.read_bytes()):
            yield found


def release_label(folder: Path) -> str:
    """The meta package's version when its wheel is there, else the folder name."""
    versions = {m[1]: m[2] for w in folder.glob("*.whl") if (m := _VERSION.match(w.name))}
    return versions.get("comfyui_workflow_templates", folder.name)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def placeholders(workflow: dict[str, Any], root: Path) -> None:
    """Empty files for every model / image name in the workflow's widget values (and subgraphs)."""
    from fewstep.app.api import MODEL_FOLDERS

    nodes = list(workflow.get("nodes", []))
    for sub in (workflow.get("definitions") or {}).get("subgraphs", []):
        nodes += sub.get("nodes", [])
    for node in nodes:
        for text in _strings(node.get("widgets_values")):
            name = text.strip()
            if not name or ".." in name or name.startswith("/") or len(name) > 200:
                continue
            lower = name.lower()
            folders = MODEL_FOLDERS if lower.endswith(MODEL_SUFFIXES) else ("input",) if \
                lower.endswith(IMAGE_SUFFIXES) else ()
            for folder in folders:
                target = (root / folder / name) if folder == "input" else root / "models" / folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()


def check(name: str, workflow: dict[str, Any], registry: Any) -> Outcome:
    """Convert and validate one template, with placeholders in a fresh folder."""
    from fewstep.app.api import Paths, use_paths
    from fewstep.app.validation import validate_prompt
    from fewstep.app.workflow import WorkflowConversionError, ui_to_api

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        placeholders(workflow, root)
        paths = Paths(model_roots=(root / "models",), input_dir=root / "input", output_dir=root / "output",
                      temp_dir=root / "temp")
        with use_paths(paths):
            missing = sorted({n.get("type", "") for n in _all_nodes(workflow)
                              if registry.get(n.get("type", "")) is None} - _FRONTEND_ONLY)
            if missing:
                return Outcome(name, False, "missing_nodes", missing)
            try:
                prompt = ui_to_api(workflow, registry)
            except WorkflowConversionError as exc:
                return Outcome(name, False, f"conversion: {exc}")
            result = validate_prompt(prompt, registry)
    if result.ok:
        return Outcome(name, True)
    first = next(iter(result.node_errors.values()), {"errors": [result.error]})["errors"][0] or {}
    return Outcome(name, False, f"{first.get('type')}: {first.get('message')} {first.get('details', '')}".strip())


_FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute", ""}


def _all_nodes(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """Nodes of the workflow and of its subgraph definitions (a subgraph instance's type is its uuid)."""
    subgraphs = (workflow.get("definitions") or {}).get("subgraphs", [])
    ids = {sub.get("id") for sub in subgraphs}
    nodes = [n for n in workflow.get("nodes", []) if n.get("type") not in ids]
    for sub in subgraphs:
        nodes += [n for n in sub.get("nodes", []) if n.get("type") not in ids]
    return nodes


def survey(folder: Path, registry: Any) -> dict[str, Any]:
    """One release's numbers."""
    outcomes = [check(name, wf, registry) for name, wf in _workflows(folder)]
    missing = Counter(n for o in outcomes for n in o.missing_nodes)
    basics = {o.name: ("ok" if o.ok else o.reason if o.reason != "missing_nodes" else
                       "missing " + ", ".join(o.missing_nodes)) for o in outcomes if o.name in SD_BASICS}
    return {"release": release_label(folder), "templates": len(outcomes),
            "validate": sum(o.ok for o in outcomes),
            "fail_missing_nodes": sum(o.reason == "missing_nodes" for o in outcomes),
            "fail_other": sum(not o.ok and o.reason != "missing_nodes" for o in outcomes),
            "missing_nodes": missing.most_common(), "sd_basics": basics,
            "other_failures": {o.name: o.reason for o in outcomes if not o.ok and o.reason != "missing_nodes"}}


def _print(report: dict[str, Any], top: int, out: Any) -> None:
    write = out.write
    write(f"release {report['release']}: {report['validate']} of {report['templates']} templates validate; "
          f"{report['fail_missing_nodes']} fail for missing node types, {report['fail_other']} otherwise\n")
    basics = report["sd_basics"]
    write(f"  SD1.5/SDXL core-only templates: {sum(v == 'ok' for v in basics.values())} of {len(basics)} validate\n")
    for name, status in sorted(basics.items()):
        write(f"    {name}: {status}\n")
    write(f"  most frequent missing node types (templates needing each), top {top}:\n")
    for node, count in report["missing_nodes"][:top]:
        write(f"    {count:4d}  {node}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fewstep bench comfy_templates", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="one folder of template wheels per release")
    parser.add_argument("--top", type=int, default=25, help="missing node types to list")
    parser.add_argument("--json", type=Path, help="also write the full reports here")
    args = parser.parse_args(argv)
    from fewstep.app.registry import load_registry

    registry = load_registry(entry_points=False)
    reports = [survey(folder, registry) for folder in args.folders]
    for report in reports:
        _print(report, args.top, sys.stdout)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
