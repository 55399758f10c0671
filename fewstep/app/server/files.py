"""File routes: ``/view``, ``/view_metadata``, ``/upload/image|mask``, ``/models``, ``/embeddings``.

Every path a client names goes through :func:`app.server.security.safe_path`, which refuses absolute
paths, ``..`` (also when URL-encoded: aiohttp decodes the query first) and symlinks that leave the root.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import mimetypes
import os
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from fewstep.app.api import MODEL_FOLDERS, ImageTooLarge, Paths, check_name, open_image
from fewstep.app.server.security import UnsafePath, json_object, safe_path, safe_path_or_400
from fewstep.app.server.state import OPTIONS, PATHS, RUNTIME
from fewstep.app.writes import pending_path

FILE_TYPES = ("input", "output", "temp")
# Served as attachments so a crafted upload can never run script in the editor's origin.
DOWNLOAD_ONLY = {".html", ".htm", ".js", ".mjs", ".css", ".svg", ".xhtml", ".xml"}
# Media the savers write, typed without the host's mime.types: Python 3.11's own table lacks .webp and .glb
# (they were served as application/octet-stream where /etc/mime.types is absent).
MEDIA_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".gif": "image/gif", ".webp": "image/webp",
               ".png": "image/png", ".glb": "model/gltf-binary", ".gltf": "model/gltf+json", ".obj": "model/obj",
               ".ply": "application/octet-stream"}
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def paths_of(request: web.Request) -> Paths:
    """The app's one Paths object (its model-listing cache is shared with validation and the executor)."""
    return request.app[PATHS]


def type_root(request: web.Request, kind: str) -> Path:
    """The directory behind a ``type`` parameter (input / output / temp)."""
    paths = paths_of(request)
    roots = {"input": paths.input_dir, "output": paths.output_dir, "temp": paths.temp_dir}
    if kind not in roots:
        raise web.HTTPBadRequest(text=f"type must be one of {list(FILE_TYPES)}, got {kind!r}")
    roots[kind].mkdir(parents=True, exist_ok=True)
    return roots[kind]


def _preview(path: Path, spec: str, channel: str) -> tuple[bytes, str] | None:
    """Re-encode an image: ``preview=webp;90`` or ``jpeg;85``, ``channel=rgb|a|rgba`` (None = serve as is)."""
    from PIL import Image

    if not spec and channel == "rgba":
        return None
    with open_image(path) as image:
        image.load()
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":
        alpha = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
        image = Image.merge("RGBA", (alpha, alpha, alpha, Image.new("L", image.size, 255)))
    fmt, _, quality = spec.partition(";")
    fmt = {"jpg": "jpeg"}.get(fmt.lower(), fmt.lower()) or "png"
    if fmt not in ("webp", "jpeg", "png"):
        raise web.HTTPBadRequest(text=f"preview format must be webp, jpeg or png, got {fmt!r}")
    buffer = io.BytesIO()
    if fmt == "jpeg":
        image = image.convert("RGB")
    image.save(buffer, format=fmt.upper(), quality=int(quality) if quality.isdigit() else 90)
    return buffer.getvalue(), f"image/{fmt}"


# Encoded previews are kept on disk (``temp/.previews``), so an image is decoded once per content and format,
# not on every request: a 400-megapixel PNG cost ~550 MB of memory for each /view?preview request.
PREVIEW_DIR = ".previews"
PREVIEW_CACHE_BYTES = 512 * 1024 * 1024
PREVIEW_FORMATS = ("webp", "jpeg", "png")   # what _preview encodes to


def _preview_key(path: Path, spec: str, channel: str) -> str:
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{spec}|{channel}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cached_preview(path: Path, spec: str, channel: str, cache_dir: Path) -> tuple[bytes, str] | None:
    """:func:`_preview` through the on-disk cache (key: the file's path, mtime and size, format, channel)."""
    if not spec and channel == "rgba":
        return None
    key = _preview_key(path, spec, channel)
    for fmt in PREVIEW_FORMATS:
        entry = cache_dir / f"{key}.{fmt}"
        try:
            data = entry.read_bytes()
        except OSError:   # not cached in this format, or pruned meanwhile by another request
            continue
        with contextlib.suppress(OSError):
            entry.touch()   # least recently used goes first when pruning
        return data, f"image/{fmt}"
    converted = _preview(path, spec, channel)
    if converted is not None:
        _store_preview(cache_dir, f"{key}.{converted[1].split('/')[1]}", converted[0])
    return converted


def _store_preview(cache_dir: Path, name: str, data: bytes) -> None:
    """Best effort: each writer fills its own temporary file and renames it over ``name`` (atomic), so
    concurrent previews of one image never read or rename one another's half-written file (they once shared
    one ``.part`` name: the second rename found it gone and its request failed with 415); a failure only
    costs the cache entry, never the response."""
    temporary = ""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=cache_dir, prefix=".writing-", suffix=".part")
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, cache_dir / name)
    except OSError:
        if temporary:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        return
    _prune(cache_dir, PREVIEW_CACHE_BYTES)


def _prune(folder: Path, budget: int) -> None:
    """Delete the least recently used files of ``folder`` until it holds at most ``budget`` bytes."""
    entries = []
    for entry in folder.iterdir():
        try:
            stat = entry.stat()
        except OSError:
            continue
        entries.append((stat.st_mtime, stat.st_size, entry))
    total = sum(size for _, size, _ in entries)
    for _, size, entry in sorted(entries, key=lambda e: e[0]):
        if total <= budget:
            break
        entry.unlink(missing_ok=True)
        total -= size


PENDING_WRITE_WAIT_S = 30.0   # the longest /view waits for a file a job is still writing


async def _pending_write(path: Path) -> None:
    """Wait while ``path`` is being written in the background (its ``.part`` placeholder exists, see
    ``app.writes``): a job names its files in ``executed`` before they are encoded, and the writer may be
    another process (``serve --workers``), so the placeholder, not an in-process future, is the signal.
    The placeholder is renamed over the file (atomic), so the loop ends with the file complete or gone."""
    part = pending_path(path)
    deadline = time.monotonic() + PENDING_WRITE_WAIT_S
    while part.exists() and not path.is_file() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


async def get_view(request: web.Request) -> web.StreamResponse:
    """``/view?filename=&type=output&subfolder=&preview=webp;90&channel=rgba``."""
    query = request.query
    filename = query.get("filename", "")
    if not filename:
        raise web.HTTPBadRequest(text="query parameter 'filename' is required")
    root = type_root(request, query.get("type", "output") or "output")
    path = safe_path_or_400(root, query.get("subfolder", ""), filename)
    if not path.is_file():
        await _pending_write(path)
    if not path.is_file():
        raise web.HTTPNotFound(text=f"file {filename!r} not found in {query.get('type', 'output')}")
    channel = query.get("channel", "rgba")
    if channel not in ("rgb", "a", "rgba"):
        raise web.HTTPBadRequest(text=f"channel must be rgb, a or rgba, got {channel!r}")
    is_image = (mimetypes.guess_type(path.name)[0] or "").startswith("image/") and path.suffix != ".svg"
    if is_image and (query.get("preview") or channel != "rgba"):
        try:
            async with request.app[RUNTIME].previews:   # memory: at most PREVIEW_CONCURRENCY decodes at once
                cache_dir = paths_of(request).temp_dir / PREVIEW_DIR
                converted = await asyncio.to_thread(_cached_preview, path, query.get("preview", ""), channel,
                                                    cache_dir)
        except ImageTooLarge as exc:
            raise web.HTTPRequestEntityTooLarge(max_size=0, actual_size=0, text=str(exc)) from None
        except OSError as exc:   # not a decodable image after all
            raise web.HTTPUnsupportedMediaType(text=f"{filename!r} cannot be previewed: {exc}") from None
        if converted is not None:
            return web.Response(body=converted[0], content_type=converted[1])
    response = web.FileResponse(path)
    if path.suffix.lower() in MEDIA_TYPES:
        response.content_type = MEDIA_TYPES[path.suffix.lower()]
    if path.suffix.lower() in DOWNLOAD_ONLY:
        response.headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
        response.headers["Content-Type"] = "application/octet-stream"
    return response


def read_safetensors_metadata(path: Path) -> dict[str, Any]:
    """The ``__metadata__`` dict of a safetensors header (8-byte little-endian length + JSON).

    Raises:
        ValueError: naming the file (not its folder) when the header is short, too large, not JSON,
            or its ``__metadata__`` is not an object.
    """
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path.name}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_SAFETENSORS_HEADER:
            raise ValueError(f"{path.name}: safetensors header of {length} bytes is implausibly large")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path.name}: safetensors header is not JSON ({type(exc).__name__})") from None
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{path.name}: safetensors __metadata__ is {type(metadata).__name__}, not an object")
    return metadata


async def get_view_metadata(request: web.Request) -> web.Response:
    """``/view_metadata/{folder}?filename=x.safetensors``: only the model folders, only relative names.

    Errors name the folder and file as the client gave them, never the absolute server path.
    """
    folder, filename = request.match_info["folder"], request.query.get("filename", "")
    if folder not in MODEL_FOLDERS:
        raise web.HTTPNotFound(text=f"unknown model folder {folder!r}; known: {list(MODEL_FOLDERS)}")
    if not filename.endswith(".safetensors"):
        raise web.HTTPBadRequest(text="filename must name a .safetensors file")
    try:
        check_name(filename, "filename")
        path = paths_of(request).find_model(folder, filename)
        if not path.is_file():
            raise FileNotFoundError(filename)
        return web.json_response(await asyncio.to_thread(read_safetensors_metadata, path))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
    except (FileNotFoundError, IsADirectoryError):
        raise web.HTTPNotFound(text=f"{folder}/{filename} not found") from None


def _free_name(directory: Path, name: str, data: bytes) -> tuple[Path, bool]:
    """Where to write ``name``: reuse a same-content file, else ``name (i).ext``. Returns (path, exists)."""
    path = directory / name
    digest = hashlib.sha256(data).digest()
    stem, suffix, i = Path(name).stem, Path(name).suffix, 1
    while path.exists():
        if path.is_file() and hashlib.sha256(path.read_bytes()).digest() == digest:
            return path, True
        path = directory / f"{stem} ({i}){suffix}"
        i += 1
    return path, False


async def _read_upload(request: web.Request) -> tuple[dict[str, str], str, bytes]:
    """Multipart fields, the image's file name and bytes, enforcing the upload size limit."""
    limit = request.app[OPTIONS].max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length,
                                            text=f"upload of {request.content_length} bytes is over the "
                                                 f"limit of {limit} bytes")
    try:
        reader = await request.multipart()
        fields, filename, data = await _read_parts(reader, limit)
    except (AssertionError, ValueError, LookupError, EOFError, HttpProcessingError) as exc:
        # a broken body (bad boundary, truncated by a lying Content-Length, bad headers) is the client's
        raise web.HTTPBadRequest(text=f"expected a multipart/form-data upload: {type(exc).__name__}: {exc}") from None
    if not filename:
        raise web.HTTPBadRequest(text="multipart field 'image' with a file name is required")
    return fields, filename, data


async def _read_parts(reader: Any, limit: int) -> tuple[dict[str, str], str, bytes]:
    """The form fields and the ``image`` part of a multipart body, at most ``limit`` bytes in all."""
    fields: dict[str, str] = {}
    filename, data = "", b""
    total = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        pieces = []
        while piece := await part.read_chunk(1 << 20):   # 1 MiB at a time, so the limit bites early
            total += len(piece)
            if total > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=total,
                                                    text=f"upload is over the limit of {limit} bytes")
            pieces.append(piece)
        chunk = b"".join(pieces)
        if part.name == "image":
            filename, data = part.filename or "", chunk
        elif part.name:
            fields[part.name] = chunk.decode("utf-8", "replace")
    return fields, filename, data


def _target(request: web.Request, fields: dict[str, str], filename: str) -> tuple[Path, str, str]:
    kind = fields.get("type", "input") or "input"
    subfolder = fields.get("subfolder", "")
    try:   # "." or ".." named the folder itself (an overwrite then wrote onto a directory: a 500)
        check_name(filename, "upload file name", allow_subfolders=False)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    directory = safe_path_or_400(type_root(request, kind), subfolder)
    safe_path_or_400(directory, filename)
    return directory, kind, subfolder


async def _store_upload(request: web.Request, fields: dict[str, str], filename: str,
                        data: bytes) -> web.Response:
    directory, kind, subfolder = _target(request, fields, filename)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if fields.get("overwrite", "").lower() in ("true", "1"):
            path, exists = directory / filename, False
        else:
            path, exists = await asyncio.to_thread(_free_name, directory, filename, data)
        if not exists:
            await asyncio.to_thread(path.write_bytes, data)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        # the subfolder is a file, or the name a folder (found by the fuzzer: a 500 before)
        raise web.HTTPConflict(text=f"upload {subfolder + '/' if subfolder else ''}{filename!r} conflicts "
                                    "with an existing file or folder") from None
    return web.json_response({"name": path.name, "subfolder": subfolder, "type": kind})


async def post_upload_image(request: web.Request) -> web.Response:
    """multipart ``image`` (file), ``type`` (input default), ``subfolder``, ``overwrite``."""
    fields, filename, data = await _read_upload(request)
    return await _store_upload(request, fields, filename, data)


def _apply_mask(original: Path, mask_bytes: bytes) -> bytes:
    """The original image with the uploaded image's alpha as its alpha channel, as PNG."""
    with open_image(original) as base, open_image(io.BytesIO(mask_bytes), "mask") as mask:
        base = base.convert("RGBA")
        alpha = mask.getchannel("A") if "A" in mask.getbands() else mask.convert("L")
        base.putalpha(alpha.resize(base.size))
        buffer = io.BytesIO()
        base.save(buffer, format="PNG")
    return buffer.getvalue()


async def post_upload_mask(request: web.Request) -> web.Response:
    """Like ``/upload/image`` plus ``original_ref`` ``{filename, subfolder, type}``: writes a masked copy."""
    fields, filename, data = await _read_upload(request)
    try:
        ref = json_object(json.loads(fields.get("original_ref", "")), "original_ref")
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"original_ref must be JSON: {exc}") from None
    root = type_root(request, str(ref.get("type", "input")))
    original = safe_path_or_400(root, str(ref.get("subfolder", "")), str(ref.get("filename", "")))
    if not original.is_file():
        raise web.HTTPNotFound(text=f"original image {ref.get('filename')!r} not found")
    from PIL import Image

    try:
        masked = await asyncio.to_thread(_apply_mask, original, data)
    except ImageTooLarge as exc:
        raise web.HTTPRequestEntityTooLarge(max_size=0, actual_size=0, text=str(exc)) from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:   # not an image, or a bomb
        raise web.HTTPBadRequest(text=f"mask upload {filename!r} is not a readable image "
                                      f"({type(exc).__name__})") from None
    return await _store_upload(request, {**fields, "overwrite": fields.get("overwrite", "")}, filename, masked)


async def get_models(request: web.Request) -> web.Response:
    return web.json_response(list(MODEL_FOLDERS))


async def get_models_folder(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    if folder not in MODEL_FOLDERS:
        raise web.HTTPNotFound(text=f"unknown model folder {folder!r}; known: {list(MODEL_FOLDERS)}")
    return web.json_response(await asyncio.to_thread(paths_of(request).list_models, folder))


async def get_experiment_models(request: web.Request) -> web.Response:
    paths = paths_of(request)
    return web.json_response([{"name": f, "folders": [str(d) for d in paths.model_dirs(f)]}
                              for f in MODEL_FOLDERS])


def _model_entries(paths: Paths, folder: str) -> list[dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for index, directory in enumerate(paths.model_dirs(folder)):
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*")):
            name = path.relative_to(directory).as_posix()
            if path.is_file() and name not in entries:
                stat = path.stat()
                entries[name] = {"name": name, "pathIndex": index, "modified": stat.st_mtime,
                                 "created": stat.st_ctime, "size": stat.st_size}
    return list(entries.values())


async def get_experiment_models_folder(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    if folder not in MODEL_FOLDERS:
        raise web.HTTPNotFound(text=f"unknown model folder {folder!r}")
    return web.json_response(await asyncio.to_thread(_model_entries, paths_of(request), folder))


async def get_embeddings(request: web.Request) -> web.Response:
    names = await asyncio.to_thread(paths_of(request).list_models, "embeddings")
    return web.json_response([Path(n).with_suffix("").as_posix() for n in names])


async def get_internal_files(request: web.Request) -> web.Response:
    """Files under input / output / temp, newest first (the editor's input-file picker)."""
    root = type_root(request, request.match_info["kind"])

    def listing() -> list[str]:
        real = root.resolve()   # symlinks out of the folder are not listed (nor served: see safe_path)
        files = [p for p in root.rglob("*") if p.is_file() and p.resolve().is_relative_to(real)]
        files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return [p.relative_to(root).as_posix() for p in files]
    return web.json_response(await asyncio.to_thread(listing))


async def get_folder_paths(request: web.Request) -> web.Response:
    paths = paths_of(request)
    folders = {f: [str(d) for d in paths.model_dirs(f)] for f in MODEL_FOLDERS}
    folders |= {"input": [str(paths.input_dir)], "output": [str(paths.output_dir)],
                "temp": [str(paths.temp_dir)]}
    return web.json_response(folders)


def add_file_routes(add: Any) -> None:
    add("GET", "/view", get_view)
    add("GET", "/view_metadata/{folder}", get_view_metadata)
    add("POST", "/upload/image", post_upload_image)
    add("POST", "/upload/mask", post_upload_mask)
    add("GET", "/models", get_models)
    add("GET", "/models/{folder}", get_models_folder)
    add("GET", "/experiment/models", get_experiment_models)
    add("GET", "/experiment/models/{folder}", get_experiment_models_folder)
    add("GET", "/embeddings", get_embeddings)
    add("GET", "/internal/files/{kind}", get_internal_files)
    add("GET", "/internal/folder_paths", get_folder_paths)


__all__ = ["UnsafePath", "add_file_routes", "safe_path", "type_root"]
