"""Per-user files: ``/users``, ``/settings``, ``/userdata`` (list, get, post, delete, move), ``/v2/userdata``.

fewstep is single-user: everything lives in ``<home>/user/default/``, settings in
``comfy.settings.json`` there. Paths come URL-encoded (``workflows%2Fa.json``) and are checked by
:func:`app.server.security.safe_path`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from fewstep.app.server.security import json_object, read_body, read_json, safe_path_or_400
from fewstep.app.server.state import OPTIONS, PATHS

SETTINGS_FILE = "comfy.settings.json"
# A new user's settings. TutorialCompleted: editor 1.58.1 then opens the default graph on start-up
# (ours, see frontend/fewstep.js) instead of a blank canvas and its templates dialog.
# ShowVersionUpdates off: the editor would otherwise ask api.comfy.org for ComfyUI releases.
DEFAULT_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Notification.ShowVersionUpdates": False}
# Files the editor probes at start-up; seeding them keeps start-up free of 404s.
SEED_FILES = {"user.css": "/* your CSS for the editor */\n", "comfy.templates.json": "[]\n"}
SEED_DIRS = ("workflows", "subgraphs")
# Files the editor reads before it ever writes them, answered with their empty content while missing (not
# written: the workflow sidebar would list them): the bookmark index, read when the sidebar opens.
EMPTY_UNTIL_WRITTEN: dict[str, object] = {"workflows/.index.json": {"favorites": []}}


def user_root(request: web.Request) -> Path:
    root = request.app[PATHS].user_dir / "default"
    root.mkdir(parents=True, exist_ok=True)
    return root


def seed_user_dir(user_dir: Path) -> None:
    """Create ``user/default/`` with the files a new user starts with (never overwriting)."""
    root = user_dir / "default"
    for sub in SEED_DIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, text in SEED_FILES.items():
        if not (root / name).exists():
            (root / name).write_text(text)


def _load_settings(root: Path) -> dict[str, Any]:
    path = root / SETTINGS_FILE
    if not path.exists():
        return dict(DEFAULT_SETTINGS)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return dict(DEFAULT_SETTINGS)
    return data if isinstance(data, dict) else dict(DEFAULT_SETTINGS)


def _save_settings(root: Path, settings: dict[str, Any]) -> None:
    path = root / SETTINGS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2))
    os.replace(tmp, path)   # atomic: a crash never leaves half a settings file


async def get_users(request: web.Request) -> web.Response:
    return web.json_response({"storage": "server", "migrated": True})


async def post_users(request: web.Request) -> web.Response:
    return web.json_response({"error": {"type": "single_user",
                                        "message": "fewstep is single-user; there is one user, 'default'"}},
                             status=400)


async def get_settings(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(_load_settings, user_root(request)))


async def get_setting(request: web.Request) -> web.Response:
    settings = await asyncio.to_thread(_load_settings, user_root(request))
    return web.json_response(settings.get(request.match_info["id"]))


async def post_settings(request: web.Request) -> web.Response:
    update = json_object(await read_json(request), "settings")
    root = user_root(request)
    await asyncio.to_thread(lambda: _save_settings(root, {**_load_settings(root), **update}))
    return web.json_response({})


async def post_setting(request: web.Request) -> web.Response:
    value = await read_json(request)
    root, key = user_root(request), request.match_info["id"]
    await asyncio.to_thread(lambda: _save_settings(root, {**_load_settings(root), key: value}))
    return web.json_response({})


def _file_info(path: Path, root: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": stat.st_size,
            "modified": stat.st_mtime, "created": stat.st_ctime}


def _list(directory: Path, recurse: bool, full_info: bool, split: bool) -> list[Any]:
    found = directory.rglob("*") if recurse else directory.glob("*")
    files = sorted(p for p in found if p.is_file())
    if full_info:
        return [_file_info(p, directory) for p in files]
    names = [p.relative_to(directory).as_posix() for p in files]
    return [[n, *n.split("/")] for n in names] if split else names


async def get_userdata_list(request: web.Request) -> web.Response:
    """``/userdata?dir=workflows&recurse=true&full_info=true&split=false``."""
    sub = request.query.get("dir", "")
    if not sub:
        raise web.HTTPBadRequest(text="query parameter 'dir' is required")
    directory = safe_path_or_400(user_root(request), sub)
    if not directory.is_dir():
        raise web.HTTPNotFound(text=f"user folder {sub!r} does not exist")
    flag = lambda name: request.query.get(name, "").lower() == "true"  # noqa: E731
    listing = await asyncio.to_thread(_list, directory, flag("recurse"), flag("full_info"), flag("split"))
    return web.json_response(listing)


async def get_userdata_v2(request: web.Request) -> web.Response:
    """``/v2/userdata?path=``: ``[{name, path, type: file|directory, size?, modified?}]``."""
    root = user_root(request)
    directory = safe_path_or_400(root, request.query.get("path", ""))
    if not directory.is_dir():
        raise web.HTTPNotFound(text=f"user folder {request.query.get('path')!r} does not exist")

    def entries() -> list[dict[str, Any]]:
        out = []
        for p in sorted(directory.iterdir()):
            item: dict[str, Any] = {"name": p.name, "path": p.relative_to(root).as_posix(),
                                    "type": "directory" if p.is_dir() else "file"}
            if p.is_file():
                item |= {"size": p.stat().st_size, "modified": p.stat().st_mtime}
            out.append(item)
        return out
    return web.json_response(await asyncio.to_thread(entries))


def _user_file(request: web.Request, key: str = "file") -> Path:
    return safe_path_or_400(user_root(request), request.match_info[key])


async def get_userdata_file(request: web.Request) -> web.StreamResponse:
    path = _user_file(request)
    relative = path.relative_to(user_root(request)).as_posix()
    if not path.exists() and relative in EMPTY_UNTIL_WRITTEN:
        return web.json_response(EMPTY_UNTIL_WRITTEN[relative])
    if not path.is_file():
        raise web.HTTPNotFound(text=f"user file {request.match_info['file']!r} not found")
    return web.FileResponse(path)


def _overwrite(request: web.Request) -> bool:
    return request.query.get("overwrite", "true").lower() != "false"


def _written(request: web.Request, path: Path) -> web.Response:
    if request.query.get("full_info", "").lower() == "true":
        return web.json_response(_file_info(path, user_root(request)))
    return web.json_response(path.relative_to(user_root(request)).as_posix())


def _refuse_folder(request: web.Request, path: Path, key: str) -> None:
    """409 when ``path`` is the user root or a folder, or has a file where a parent folder must go:
    writing or moving onto it failed with IsADirectoryError / NotADirectoryError (a 500)."""
    root = user_root(request)
    if path == root or path.is_dir():
        raise web.HTTPConflict(text=f"{request.match_info[key]!r} is a folder, not a file")
    for parent in path.relative_to(root).parents:
        if (root / parent).is_file():
            raise web.HTTPConflict(text=f"{request.match_info[key]!r}: {parent.as_posix()!r} is a file")


async def post_userdata_file(request: web.Request) -> web.Response:
    """Write the raw body; 409 when the file exists and ``overwrite=false``."""
    path = _user_file(request)
    _refuse_folder(request, path, "file")
    if path.exists() and not _overwrite(request):
        raise web.HTTPConflict(text=f"user file {request.match_info['file']!r} exists (overwrite=false)")
    limit = request.app[OPTIONS].max_graph_bytes
    body = await read_body(request, limit + 1)
    if len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body),
                                            text=f"user file is over the limit of {limit} bytes")
    path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(path.write_bytes, body)
    return _written(request, path)


async def delete_userdata_file(request: web.Request) -> web.Response:
    path = _user_file(request)
    relative = path.relative_to(user_root(request)).as_posix()
    if not path.exists() and relative in EMPTY_UNTIL_WRITTEN:
        return web.json_response(EMPTY_UNTIL_WRITTEN[relative])
    if not path.is_file():
        raise web.HTTPNotFound(text=f"user file {request.match_info['file']!r} not found")
    path.unlink()
    return web.Response(status=204)


async def post_userdata_move(request: web.Request) -> web.Response:
    source, dest = _user_file(request), _user_file(request, "dest")
    if not source.is_file():
        raise web.HTTPNotFound(text=f"user file {request.match_info['file']!r} not found")
    _refuse_folder(request, dest, "dest")
    if dest.exists() and not _overwrite(request):
        raise web.HTTPConflict(text=f"user file {request.match_info['dest']!r} exists (overwrite=false)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(shutil.move, source, dest)
    return _written(request, dest)


def add_userdata_routes(add: Any) -> None:
    add("GET", "/users", get_users)
    add("POST", "/users", post_users)
    add("GET", "/settings", get_settings)
    add("POST", "/settings", post_settings)
    add("GET", "/settings/{id}", get_setting)
    add("POST", "/settings/{id}", post_setting)
    add("GET", "/userdata", get_userdata_list)
    add("GET", "/v2/userdata", get_userdata_v2)
    add("GET", "/userdata/{file}", get_userdata_file)
    add("POST", "/userdata/{file}", post_userdata_file)
    add("DELETE", "/userdata/{file}", delete_userdata_file)
    add("POST", "/userdata/{file}/move/{dest}", post_userdata_move)
