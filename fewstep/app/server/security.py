"""Request guards: auth token, Origin check, JSON errors, size limits and path-safe file access.

ComfyUI has no authentication and only checks Origin for loopback hosts; we check Origin always
(unless ``--cors-origin`` allows it) and, with a token configured, refuse anything not presenting it.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from fewstep.app.api import use_paths
from fewstep.app.jsonlimits import MAX_JSON_DEPTH, json_depth
from fewstep.app.server.state import OPTIONS, PATHS

log = logging.getLogger("fewstep.server")

TOKEN_COOKIE = "fewstep_token"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, *, type_: str = "error", **extra: Any) -> web.Response:
    """A JSON error response ``{"error": {"type", "message", ...}}`` with ``status``."""
    body = {"error": {"type": type_, "message": message, "details": extra.pop("details", ""),
                      "extra_info": extra}}
    return web.json_response(body, status=status)


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE)


def _token_ok(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def _is_page_request(request: web.Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With a token configured, every request must present it.

    Ways to present it: ``Authorization: Bearer T`` (scripts), ``?token=T`` on any URL, or the
    HttpOnly cookie set when a page is opened once with ``?token=T`` — the browser then sends the
    cookie on every fetch and on the websocket, which is how the unmodified editor authenticates.
    """
    expected = request.app[OPTIONS].auth_token
    if not expected:
        return await handler(request)
    presented = _presented_token(request)
    if not _token_ok(presented, expected):
        if _is_page_request(request):
            return web.Response(status=401, content_type="text/html",
                                text="<h1>401</h1><p>This fewstep server needs its access token: open "
                                     "<code>/?token=YOUR_TOKEN</code> once.</p>")
        return json_error(401, "missing or wrong auth token (send 'Authorization: Bearer <token>', "
                               "a ?token= query or the fewstep_token cookie)", type_="unauthorized")
    if "token" in request.query and _is_page_request(request):
        # First page load with ?token=: keep it in an HttpOnly cookie and drop it from the URL.
        query = {k: v for k, v in request.query.items() if k != "token"}
        response = web.Response(status=302, headers={"Location": str(request.rel_url.with_query(query))})
        response.set_cookie(TOKEN_COOKIE, expected, httponly=True, samesite="Strict", path="/")
        return response
    return await handler(request)


def host_name(host_header: str) -> str:
    """The host name of a ``Host`` header value: port and IPv6 brackets removed, lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):                        # [::1]:8188
        return host[1:].partition("]")[0]
    if host.count(":") == 1:                        # name:port (a bare IPv6 address has several colons)
        host = host.partition(":")[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(host_header: str | None, configured: str) -> bool:
    """Whether a server without a token may answer a request naming ``host_header``.

    DNS rebinding: a web page at ``evil.example`` re-points its name to 127.0.0.1, and the browser then
    treats our server as same-origin with the page (its Origin and Host match). The page's requests
    still carry ``Host: evil.example``, so a server that is not protected by a token answers only names
    that cannot be rebound: IP literals (a page cannot own one of our addresses), ``localhost`` and
    ``*.localhost`` (resolved locally by browsers), and the host the server was told to listen on.
    """
    if not host_header:
        return False            # HTTP/1.1 requires Host; a browser always sends it
    name = host_name(host_header)
    return (_is_ip(name) or name == "localhost" or name.endswith(".localhost")
            or name == host_name(configured))


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Without an auth token, refuse (403) requests whose ``Host`` is not one of ours (see :func:`host_allowed`)."""
    options = request.app[OPTIONS]
    if options.auth_token or host_allowed(request.headers.get("Host"), options.host):
        return await handler(request)
    return json_error(403, f"host {request.headers.get('Host')!r} is not this server's name; use "
                           f"http://127.0.0.1 or http://localhost, or start the server with --host <name> "
                           "or --auth-token to accept other names", type_="forbidden_host")


def _origin_allowed(request: web.Request, allowed: str | None) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null" and allowed == "*":
        return True
    if allowed == "*" or (allowed is not None and origin.rstrip("/") == allowed.rstrip("/")):
        return True
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == request.host.lower()


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-site requests (Origin host differs from Host) with 403 unless ``cors_origin`` allows them."""
    allowed = request.app[OPTIONS].cors_origin
    if not _origin_allowed(request, allowed):
        return json_error(403, f"cross-origin request from {request.headers.get('Origin')!r} refused "
                               "(start the server with --cors-origin to allow it)", type_="forbidden")
    if allowed and request.method == "OPTIONS":
        response: web.StreamResponse = web.Response()
    else:
        response = await handler(request)
    if allowed and "Origin" in request.headers and not response.prepared:
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization, Comfy-User"
        if allowed == "*":
            # Any site may read answers, but never with the user's cookies: reflecting the Origin with
            # credentials let every web page act as the logged-in editor (a token cookie included).
            response.headers["Access-Control-Allow-Origin"] = "*"
        else:
            response.headers["Access-Control-Allow-Origin"] = allowed
            response.headers["Access-Control-Allow-Credentials"] = "true"
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn HTTP errors into JSON bodies and unexpected exceptions into a 500 with a message."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return json_error(exc.status, message or exc.reason, type_=exc.reason.lower().replace(" ", "_"))
    except Exception as exc:  # a route bug must answer, not drop the connection
        log.exception("error handling %s %s", request.method, request.path)
        return json_error(500, f"{type(exc).__name__}: {exc}", type_="server_error")


@web.middleware
async def paths_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Make this app's model/input/output folders current for the request (file-list combos in
    ``/object_info`` and validation read them through ``app.api.current_paths()``)."""
    with use_paths(request.app[PATHS]):
        return await handler(request)


@web.middleware
async def cache_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Hashed editor assets are immutable; everything else is revalidated."""
    response = await handler(request)
    if not response.prepared:
        if request.path.startswith("/assets/") and response.status == 200:
            response.headers.setdefault("Cache-Control", "public, max-age=86400")
        else:
            response.headers.setdefault("Cache-Control", "no-cache")
    return response


async def read_json(request: web.Request, limit: int | None = None, *, required: bool = True) -> Any:
    """The request's JSON body; 413 above ``limit`` bytes, 400 with the parser's message if malformed."""
    limit = limit or request.app[OPTIONS].max_graph_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length,
                                            text=f"request body of {request.content_length} bytes is over "
                                                 f"the limit of {limit} bytes")
    raw = await read_body(request, limit + 1)
    if len(raw) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(raw),
                                            text=f"request body is over the limit of {limit} bytes")
    if not raw.strip():
        if required:
            raise web.HTTPBadRequest(text="request body is empty; expected JSON")
        return None
    if len(raw) > INLINE_PARSE_MAX_BYTES:   # a big graph's parse and depth walk must not stall other requests
        return await asyncio.to_thread(parse_json, raw)
    return parse_json(raw)


# Bodies up to this size are parsed on the event loop (well under a millisecond); a 1 MB graph took
# 40-200 ms there, delaying every other request and websocket by as much.
INLINE_PARSE_MAX_BYTES = 64 * 1024


def parse_json(raw: bytes | str, what: str = "JSON body", limit: int = MAX_JSON_DEPTH) -> Any:
    """``raw`` parsed; 400 (naming ``what``) when malformed or nested deeper than ``limit``."""
    try:
        value = json.loads(raw)
    except ValueError as exc:   # JSONDecodeError, UnicodeDecodeError, and ints over 4,300 digits
        raise web.HTTPBadRequest(text=f"malformed {what}: {exc}") from exc
    except RecursionError:
        value = None
        depth = limit + 1
    else:
        depth = json_depth(value, limit)
    if depth > limit:
        raise web.HTTPBadRequest(text=f"{what} is nested more than {limit} levels deep")
    return value


async def read_body(request: web.Request, most: int) -> bytes:
    """The body, up to ``most`` bytes. ``StreamReader.read(n)`` returns what has arrived so far, not n
    bytes: a single read cut bodies that came in several network reads (a 300 kB graph was refused as
    malformed JSON)."""
    chunks: list[bytes] = []
    size = 0
    while size < most:
        chunk = await request.content.read(most - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def json_object(value: Any, what: str = "request body") -> dict[str, Any]:
    """``value`` if it is a JSON object, else 400 naming ``what``."""
    if not isinstance(value, dict):
        raise web.HTTPBadRequest(text=f"{what} must be a JSON object, got {type(value).__name__}")
    return value


class UnsafePath(ValueError):
    """A requested path that would leave its root."""


def safe_path(root: Path, *parts: str) -> Path:
    """``root/parts...`` resolved, refusing absolute parts, ``..``, NUL bytes and symlinks out of ``root``.

    Raises:
        UnsafePath: naming the offending part.
    """
    root_real = root.resolve()
    relative = Path()
    for part in parts:
        if not part:
            continue
        if "\x00" in part or "\\" in part:
            raise UnsafePath(f"path {part!r} contains a forbidden character")
        candidate = Path(part)
        if candidate.is_absolute() or part.startswith("/") or ".." in candidate.parts:
            raise UnsafePath(f"path {part!r} must be relative and stay inside its folder")
        relative = relative / candidate
    full = (root_real / relative).resolve()  # follows symlinks, so a link pointing outside is caught
    if full != root_real and not full.is_relative_to(root_real):
        raise UnsafePath(f"path {relative.as_posix()!r} leaves its folder")
    return full


def safe_path_or_400(root: Path, *parts: str) -> Path:
    """:func:`safe_path`, answering 400 (forbidden path) instead of raising."""
    try:
        return safe_path(root, *parts)
    except UnsafePath as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc
