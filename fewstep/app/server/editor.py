"""The editor: the pinned ``comfyui-frontend-package`` static files at ``/``, our extensions under
``/extensions/fewstep/``, and ``graphs/`` as the template library (``/templates/...``).

The template dialog of editor 1.58.1 reads ``/templates/index.json`` (a list of categories; ours are one
per node pack, all of the ``default`` module) and loads ``/templates/<name>.json``, which must be a
UI-format workflow. A graph ``graphs/<name>.json`` is listed when it is UI format itself or has a UI twin
``<name>.ui.json``; titles, descriptions and packs come from ``graphs/templates.json`` (see
``fewstep.app.templates``).
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fewstep.app.server.security import UnsafePath, safe_path
from fewstep.app.server.state import OPTIONS, REGISTRY
from fewstep.app.templates import TemplateInfo, grouped_templates

if TYPE_CHECKING:
    from fewstep.app.registry import Registry

EDITOR_PACKAGE = "comfyui_frontend_package"
OUR_EXTENSIONS = "fewstep"


def editor_root() -> Path:
    """The pinned editor's ``static/`` folder."""
    import importlib.resources

    return Path(str(importlib.resources.files(EDITOR_PACKAGE) / "static"))


def _is_ui_graph(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def ui_graph_file(graphs_dir: Path, name: str) -> Path | None:
    """The UI-format file of graph ``name``: ``name.ui.json``, else ``name.json`` if it is UI format."""
    try:
        twin = safe_path(graphs_dir, f"{name}.ui.json")
        plain = safe_path(graphs_dir, f"{name}.json")
    except UnsafePath:
        return None
    if twin.is_file():
        return twin
    if plain.is_file():
        try:
            if _is_ui_graph(json.loads(plain.read_text())):
                return plain
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return None
    return None


def graph_names(graphs_dir: Path) -> list[str]:
    """Names of graphs that have a UI form, default first."""
    if not graphs_dir.is_dir():
        return []
    stems = {p.name[: -len(".ui.json")] if p.name.endswith(".ui.json") else p.stem
             for p in graphs_dir.glob("*.json")}
    names = sorted(n for n in stems if ui_graph_file(graphs_dir, n) is not None)
    return sorted(names, key=lambda n: n != "default")


def _template_entry(info: TemplateInfo) -> dict[str, Any]:
    return {"name": info.name, "title": info.title, "description": info.description or info.title,
            "mediaType": "image", "mediaSubtype": "png"}


def templates_index(graphs_dir: Path) -> list[dict[str, Any]]:
    """One category per node pack (``graphs/templates.json`` names pack, title and description of each
    graph). Every category is module ``default`` so the editor loads its files from ``/templates/``; the
    shared ``category`` makes editor 1.58 list the packs as one group in its side bar."""
    groups = grouped_templates(graphs_dir, graph_names(graphs_dir))
    return [{"moduleName": "default", "title": title, "category": "fewstep", "type": "image",
             "templates": [_template_entry(info) for info in infos]} for title, infos in groups]


async def get_templates_index(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(templates_index, request.app[OPTIONS].graphs_dir))


def _thumbnail(graphs_dir: Path, name: str) -> bytes:
    """``graphs/<name>.png`` if present, else a small generated placeholder."""
    from PIL import Image, ImageDraw

    own = graphs_dir / f"{name}.png"
    if own.is_file():
        return own.read_bytes()
    image = Image.new("RGB", (256, 256), (32, 36, 44))
    ImageDraw.Draw(image).text((16, 120), name[:28], fill=(220, 220, 220))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


async def get_template_file(request: web.Request) -> web.StreamResponse:
    """``/templates/<name>.json`` (the UI graph), ``<name>-1.png`` (thumbnail), ``index*.json``."""
    graphs_dir, file = request.app[OPTIONS].graphs_dir, request.match_info["file"]
    if file == "index.json" or (file.startswith("index.") and file.endswith(".json") and
                                file.count(".") == 2 and file != "index_logo.json"):
        return await get_templates_index(request)
    if file == "index_logo.json" or file == "fuse_options.json":
        return web.json_response({})
    if file.endswith("-1.png"):
        name = file[: -len("-1.png")]
        if ui_graph_file(graphs_dir, name) is None:
            raise web.HTTPNotFound(text=f"no template {name!r}")
        return web.Response(body=await asyncio.to_thread(_thumbnail, graphs_dir, name), content_type="image/png")
    if file.endswith(".json"):
        path = ui_graph_file(graphs_dir, file[: -len(".json")])
        if path is not None:
            return web.FileResponse(path, headers={"Content-Type": "application/json"})
    raise web.HTTPNotFound(text=f"no template file {file!r} in {graphs_dir}")


async def get_default_graph(request: web.Request) -> web.Response:
    """The UI graph the editor opens on first visit (``graphs/default``); 204 when there is none (the
    editor then starts blank — a start-up probe, so not an error status)."""
    options = request.app[OPTIONS]
    path = ui_graph_file(options.graphs_dir, options.default_graph)
    if path is None:
        return web.Response(status=204)
    return web.FileResponse(path, headers={"Content-Type": "application/json"})


def _pack_example_dirs(registry: Registry) -> dict[str, Path]:
    """Node packs' ``example_workflows/`` folders (ComfyUI's custom-node template convention)."""
    found = {}
    for pack in registry.packs:
        source = Path(str(pack.source))
        folder = (source if source.is_dir() else source.parent) / "example_workflows"
        if folder.is_dir():
            found[pack.name] = folder
    return found


async def get_workflow_templates(request: web.Request) -> web.Response:
    """``{pack: [example workflow names]}`` from node packs' ``example_workflows/``."""
    dirs = _pack_example_dirs(request.app[REGISTRY])
    return web.json_response({pack: sorted(p.stem for p in d.glob("*.json")) for pack, d in dirs.items()})


async def get_pack_workflow(request: web.Request) -> web.StreamResponse:
    folder = _pack_example_dirs(request.app[REGISTRY]).get(request.match_info["pack"])
    if folder is None:
        raise web.HTTPNotFound(text=f"no node pack {request.match_info['pack']!r} with example workflows")
    try:
        path = safe_path(folder, request.match_info["file"])
    except UnsafePath as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    if not path.is_file():
        raise web.HTTPNotFound(text=f"no example workflow {request.match_info['file']!r}")
    return web.FileResponse(path)


def extension_dirs(request_app: web.Application) -> dict[str, Path]:
    """``{name: folder}`` served at ``/extensions/<name>/``: ours plus packs' web directories."""
    dirs = {OUR_EXTENSIONS: request_app[OPTIONS].extensions_dir}
    for pack in request_app[REGISTRY].packs:
        if pack.web_dir is not None and pack.name not in dirs:
            dirs[pack.name] = Path(pack.web_dir)
    return dirs


async def get_extensions(request: web.Request) -> web.Response:
    """Every ``*.js`` under each extension folder, as URLs the editor imports."""
    urls = []
    for name, folder in extension_dirs(request.app).items():
        if folder.is_dir():
            urls += [f"/extensions/{name}/{p.relative_to(folder).as_posix()}" for p in sorted(folder.rglob("*.js"))]
    return web.json_response(urls)


async def get_extension_file(request: web.Request) -> web.StreamResponse:
    folder = extension_dirs(request.app).get(request.match_info["name"])
    if folder is None:
        return await serve_editor_file(request)   # the editor's own bundled /extensions/core/...
    try:
        path = safe_path(folder, request.match_info["path"])
    except UnsafePath as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    if not path.is_file():
        raise web.HTTPNotFound(text=f"no extension file {request.match_info['path']!r}")
    return web.FileResponse(path)


async def serve_editor_file(request: web.Request) -> web.StreamResponse:
    """Any other GET: a file of the editor's ``static/``; ``/`` is its index.html."""
    root = request.app[OPTIONS].editor_root
    rel = request.path.lstrip("/") or "index.html"
    try:
        path = safe_path(root, rel)
    except UnsafePath as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    if path.is_dir():
        path = path / "index.html"
    if not path.is_file():
        if rel == "user.css":      # the editor links it unconditionally; ComfyUI has none either
            return web.Response(text="", content_type="text/css")
        raise web.HTTPNotFound(text=f"not found: /{rel}")
    return web.FileResponse(path)


def add_editor_api_routes(add: Any) -> None:
    """Template-library and extension-list JSON routes (with their /api twins)."""
    add("GET", "/workflow_templates", get_workflow_templates)
    add("GET", "/workflow_templates/{pack}/{file}", get_pack_workflow)
    add("GET", "/extensions", get_extensions)
    add("GET", "/fewstep/default_graph", get_default_graph)


def add_static_routes(app: web.Application) -> None:
    """Templates, extension files and the editor's static catch-all (registered last)."""
    app.router.add_get("/templates/{file}", get_template_file)
    app.router.add_get("/extensions/{name}/{path:.+}", get_extension_file)
    app.router.add_get("/{tail:.*}", serve_editor_file)
