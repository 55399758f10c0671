"""The template library: ``graphs/`` as the editor's templates, and UI twins generated from API graphs.

Files in ``graphs/`` (see ``docs/templates.md``):

- ``<name>.json``: an API-format graph, the source of truth (what ``fewstep run`` and the tests run).
- ``templates.json``: hand-kept, one entry per graph: ``pack``, ``title``, one-line ``description``; plus
  the packs' order and titles (the editor's template browser groups by pack).
- ``<name>.ui.json``: the UI twin, *generated* by ``api_to_ui`` (never edited by hand).
- ``<name>.png``: the thumbnail, the graph's own first output image.
- ``templates.lock.json``: generated, the sha256 of each graph, twin and thumbnail when they were last
  made, so a test fails when a graph changes without its twin and thumbnail being made again.

``python -m fewstep.bench.templates`` regenerates twins, thumbnails and the lock.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The converter's own reading of widget positions, so generated twins convert back exactly.
from fewstep.app.workflow import _default_value, _frontend_widget_count, _has_seed_control, editor_input_order

if TYPE_CHECKING:
    from fewstep.app.api import Input, Schema
    from fewstep.app.registry import Registry

MANIFEST = "templates.json"
LOCK = "templates.lock.json"
UI_SUFFIX = ".ui.json"
GENERATED_BY = "python -m fewstep.bench.templates"

# Node size estimate in LiteGraph's units (the editor renders max(saved size, its computeSize()), so an
# estimate at or above what it computes is what it shows; the browser test measures the real rectangles).
TITLE_HEIGHT = 30       # LiteGraph.NODE_TITLE_HEIGHT: drawn above pos
SLOT_HEIGHT = 20        # LiteGraph.NODE_SLOT_HEIGHT
WIDGET_HEIGHT = 24      # NODE_WIDGET_HEIGHT 20 + 4 spacing
MULTILINE_HEIGHT = 110  # a STRING text area's minimum height in editor 1.58
# Width: the title dominates; editor 1.58 measured 6.6-7.4 px a character + ~40 px (KSamplerSelect titled
# with 59 characters: 431 px; PSOAdapterLoader, 42: 348 px), so 7.5 px + 45 px stays at or above it.
CHAR_WIDTH, WIDTH_PAD = 7.5, 45
MIN_WIDTH, MAX_WIDTH = 220, 660
IMAGE_SINK_SIZE = (260, 300)  # SaveImage / PreviewImage grow to show their image; reserve the room
# The editor puts its 3D viewer on these and sizes a new one to at least 400 x 550 (load3d / saveMesh
# extensions' nodeCreated), but a loaded workflow keeps its saved size: smaller, the viewer is 0 px high.
VIEWER_3D_NODES, VIEWER_3D_SIZE = ("SaveGLB", "Preview3D", "Load3D"), (400, 550)
# PreviewAny gets a read-only text box from the editor (no widget in its schema): 122 px tall as rendered
# by editor 1.58 (tests/browser/test_template_layout.py measured [225, 122] against our [225, 40])
TEXT_PREVIEW_NODES, TEXT_PREVIEW_HEIGHT = ("PreviewAny",), 122
COLUMN_GAP, ROW_GAP = 60, 40


@dataclass(frozen=True)
class TemplateInfo:
    """One graph's entry in the template browser."""

    name: str
    pack: str
    title: str
    description: str


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(graphs_dir: Path) -> tuple[list[tuple[str, str]], dict[str, TemplateInfo]]:
    """``([(pack id, pack title)] in display order, {graph name: info})``; empty when there is no manifest."""
    path = graphs_dir / MANIFEST
    if not path.is_file():
        return [], {}
    data = json.loads(path.read_text())
    packs = [(str(p["id"]), str(p["title"])) for p in data.get("packs", [])]
    infos = {name: TemplateInfo(name, str(e.get("pack", "core")), str(e.get("title", name)),
                                str(e.get("description", "")))
             for name, e in data.get("templates", {}).items()}
    return packs, infos


def api_graph_names(graphs_dir: Path) -> list[str]:
    """Stems of the API graphs in ``graphs_dir`` (not twins, not the manifest or lock)."""
    return sorted(p.stem for p in graphs_dir.glob("*.json")
                  if not p.name.endswith(UI_SUFFIX) and p.name not in (MANIFEST, LOCK))


def grouped_templates(graphs_dir: Path, names: list[str]) -> list[tuple[str, list[TemplateInfo]]]:
    """``names`` grouped by pack: ``[(pack title, [info])]`` in the manifest's pack order; a graph the
    manifest does not know is still listed (under "Other", titled by its name) rather than hidden."""
    packs, infos = read_manifest(graphs_dir)
    titles = dict(packs)
    groups: dict[str, list[TemplateInfo]] = defaultdict(list)
    for name in names:
        info = infos.get(name) or TemplateInfo(name, "other", name.replace("_", " "), name.replace("_", " "))
        groups[info.pack].append(info)
    order = [p for p, _ in packs] + sorted(p for p in groups if p not in titles)
    return [(titles.get(p, p.title()), groups[p]) for p in order if groups.get(p)]


# ---------------------------------------------------------------------------------------------
# API graph -> UI workflow
# ---------------------------------------------------------------------------------------------


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _widget_value(port: Input, api_inputs: dict[str, Any]) -> Any:
    value = api_inputs.get(port.name)
    if value is None or _is_link(value):
        return _default_value(port)
    if isinstance(value, dict) and "__value__" in value:
        return value["__value__"]
    return value


def _frontend_entries(port: Input) -> list[Any]:
    """The editor-only values saved after a widget's own (see ``workflow._frontend_widget_count``).

    Seed controls are saved as "fixed": a template shows the graph's own output when run, and a trainer
    resumes its run folder only while its seed stays put.
    """
    entries: list[Any] = []
    if _has_seed_control(port):
        entries += ["fixed", ""] if port.type == "COMBO" else ["fixed"]
    extra = port.extra or {}
    if extra.get("image_upload") or extra.get("animated_image_upload") or extra.get("video_upload"):
        entries.append("image")
    entries += [None] * (_frontend_widget_count(port) - len(entries))
    return entries


def _estimate_size(schema: Schema, title: str) -> list[int]:
    title_width = int(len(title) * CHAR_WIDTH) + WIDTH_PAD   # the editor widens a node to its title, uncapped
    if schema.node_id in ("SaveImage", "PreviewImage"):
        return [max(IMAGE_SINK_SIZE[0], title_width), IMAGE_SINK_SIZE[1]]
    slots = max(sum(1 for p in schema.inputs if not p.is_widget), len(schema.outputs))
    widgets = [p for p in schema.inputs if p.is_widget]
    height = slots * SLOT_HEIGHT + 10
    texts = [title] + [f"{p.name}  {p.default}" for p in widgets] + [o.name for o in schema.outputs]
    for port in widgets:   # a seed control or upload button is a widget row of its own
        height += (MULTILINE_HEIGHT if port.multiline else WIDGET_HEIGHT) + WIDGET_HEIGHT * len(_frontend_entries(port))
    width = int(max(len(t) for t in texts) * CHAR_WIDTH) + WIDTH_PAD
    size = [max(min(max(width, MIN_WIDTH), MAX_WIDTH), title_width), height + 10]
    if schema.node_id in VIEWER_3D_NODES:   # the viewer's minimum; a long title still widens the node
        size = [max(size[0], VIEWER_3D_SIZE[0]), max(size[1], VIEWER_3D_SIZE[1])]
    if schema.node_id in TEXT_PREVIEW_NODES:
        size = [size[0], max(size[1], TEXT_PREVIEW_HEIGHT)]
    return size


def _columns(prompt: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Layer of each node: longest path from a source; a source sits just left of its first consumer."""
    parents = {nid: [v[0] for v in node.get("inputs", {}).values() if _is_link(v) and v[0] in prompt]
               for nid, node in prompt.items()}
    column: dict[str, int] = {}

    def depth(nid: str, seen: frozenset[str]) -> int:
        if nid not in column:
            if nid in seen:   # a cycle is invalid anyway; lay it out rather than recurse forever
                return 0
            column[nid] = max((depth(p, seen | {nid}) + 1 for p in parents[nid]), default=0)
        return column[nid]

    for nid in prompt:
        depth(nid, frozenset())
    for nid, ps in parents.items():
        consumers = [column[c] for c, cps in parents.items() if nid in cps]
        if not ps and consumers:
            column[nid] = min(consumers) - 1
    return column


def _positions(prompt: dict[str, dict[str, Any]], sizes: dict[str, list[int]]) -> dict[str, list[int]]:
    """Columns left to right; in each, nodes ordered by the mean row of their inputs (fewer crossings),
    stacked with room for each title bar."""
    column = _columns(prompt)
    order = list(prompt)
    row: dict[str, float] = {}
    pos: dict[str, list[int]] = {}
    x = 40
    for col in sorted(set(column.values())):
        members = [n for n in order if column[n] == col]
        def key(nid: str) -> tuple[float, int]:
            rows = [row[v[0]] for v in prompt[nid].get("inputs", {}).values() if _is_link(v) and v[0] in row]
            return (sum(rows) / len(rows) if rows else 0.0, order.index(nid))
        members.sort(key=key)
        y = 40 + TITLE_HEIGHT
        for i, nid in enumerate(members):
            row[nid] = i
            pos[nid] = [x, y]
            y += sizes[nid][1] + TITLE_HEIGHT + ROW_GAP
        x += max(sizes[n][0] for n in members) + COLUMN_GAP
    return pos


def api_to_ui(prompt: dict[str, dict[str, Any]], registry: Registry) -> dict[str, Any]:
    """A UI workflow (editor 1.58's format, version 0.4) of the API graph ``prompt``, laid out left to
    right. ``ui_to_api`` of the result gives ``prompt`` back (titles from ``_meta.title``). No saved
    camera: the editor then fits the whole graph into the first view."""
    node_ids = {nid: int(nid) if nid.isdigit() else i + 10_000 for i, nid in enumerate(prompt)}
    schemas, titles = {}, {}
    for nid, node in prompt.items():
        node_def = registry.get(node["class_type"])
        if node_def is None:
            raise ValueError(f"node {nid}: unknown class {node['class_type']!r}")
        schemas[nid] = node_def.schema
        titles[nid] = (node.get("_meta") or {}).get("title") or node_def.schema.display_name or node["class_type"]
    sizes = {nid: _estimate_size(schemas[nid], titles[nid]) for nid in prompt}
    positions = _positions(prompt, sizes)
    links: list[list[Any]] = []
    out_links: dict[tuple[str, int], list[int]] = defaultdict(list)
    nodes = []
    for order, (nid, node) in enumerate(prompt.items()):
        schema, api_inputs = schemas[nid], node.get("inputs", {})
        inputs, values = [], []
        for port in editor_input_order(schema):
            value = api_inputs.get(port.name)
            link_id = None
            if _is_link(value) and value[0] in prompt:
                src_schema = schemas[value[0]]
                link_id = len(links) + 1
                links.append([link_id, node_ids[value[0]], value[1], node_ids[nid], len(inputs),
                              src_schema.outputs[value[1]].type])
                out_links[(value[0], value[1])].append(link_id)
            if port.is_widget:
                values += [_widget_value(port, api_inputs), *_frontend_entries(port)]
                if link_id is not None:
                    inputs.append({"name": port.name, "type": port.type, "widget": {"name": port.name},
                                   "link": link_id})
            else:
                inputs.append({"name": port.name, "type": port.type, "link": link_id})
        ui_node: dict[str, Any] = {
            "id": node_ids[nid], "type": node["class_type"], "pos": positions[nid], "size": sizes[nid],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": [],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": values}
        if (node.get("_meta") or {}).get("title"):
            ui_node["title"] = node["_meta"]["title"]
        nodes.append((nid, ui_node))
    for nid, ui_node in nodes:
        ui_node["outputs"] = [{"name": out.name, "type": out.type, "links": out_links.get((nid, slot), []),
                               "slot_index": slot} for slot, out in enumerate(schemas[nid].outputs)]
    return {"last_node_id": max(node_ids.values(), default=0), "last_link_id": len(links),
            "nodes": [n for _, n in nodes], "links": links, "groups": [], "config": {},
            "extra": {"generated_by": GENERATED_BY}, "version": 0.4}


def dump_json(data: Any) -> str:
    """The one spelling of generated files (stable, so a regenerated file diffs only where it changed)."""
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"
