"""Queue routes: ``/prompt``, ``/queue``, ``/history``, ``/jobs``, ``/interrupt``, ``/free``.

SQLite work runs in a thread (``asyncio.to_thread``) so a queue of thousands of jobs never blocks the
event loop; only small, bounded answers are built on the loop itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fewstep.app.jsonlimits import json_depth
from fewstep.app.server.security import json_object, read_json
from fewstep.app.server.state import EXECUTOR, HUB, OPTIONS, REGISTRY, RUNTIME, STORE

if TYPE_CHECKING:
    from fewstep.app.registry import Registry

# Graphs up to this many nodes are admitted (converted, validated, enqueued) on the event loop: the two
# thread hops cost more than the work (server beyond-nodes time per job of the default graph 5.9 -> 4.0 ms
# on the 2-core dev VM, 2026-11-30). Model-folder listings are cached (app.api.ListingCache) and SQLite
# reads use their own connection (app.storage), so nothing here waits on a disk walk or a long history
# query; a larger graph (validation is linear in its size) still goes to a thread.
INLINE_ADMIT_MAX_NODES = 256
JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
SORT_KEYS = ("created_at", "execution_duration")
MAX_QUERY_INT = 2**62    # limit / offset / max_items: far beyond any table, inside SQLite's 64-bit integers
MAX_ID_CHARS = 256       # prompt and client ids: a uuid is 36; a 1 MB id was accepted and stored
MAX_EXTRA_DEPTH = 64     # an editor workflow nests ~10 levels; the stored copy is read back by every listing


def _store(request: web.Request) -> Any:
    return request.app[STORE]


async def queue_remaining(store: Any) -> int:
    """Pending + running jobs (counted in a thread: the pending list may be long)."""
    return await asyncio.to_thread(store.queue_remaining)


def _prompt_error(type_: str, message: str, details: str = "", node_errors: dict | None = None) -> web.Response:
    body = {"error": {"type": type_, "message": message, "details": details, "extra_info": {}},
            "node_errors": node_errors or {}}
    return web.json_response(body, status=400)


def _to_api_format(graph: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """API-format prompt from either format; the UI workflow is converted server-side."""
    from fewstep.app import workflow  # imported lazily: a sibling module of the engine

    if workflow.is_ui_workflow(graph):
        return workflow.ui_to_api(graph, registry)
    return graph


def _parse_targets(body: dict[str, Any]) -> list[str] | None:
    targets = body.get("partial_execution_targets")
    if targets is None:
        return None
    if not isinstance(targets, list) or not all(isinstance(t, (str, int)) for t in targets):
        raise web.HTTPBadRequest(text="partial_execution_targets must be a list of node ids")
    return [str(t) for t in targets]


def _request_problem(extra_data: Any, prompt_id: Any, client_id: Any) -> str | None:
    """What is wrong with a submission's ids and ``extra_data`` shape, or None.

    Everything stored is read back by every later ``/history`` and ``/api/jobs`` listing, so shapes
    those readers rely on are checked here, once: a string ``extra_pnginfo`` or a list ``workflow``
    admitted once made every later job listing fail.
    """
    if not isinstance(prompt_id, str) or not 0 < len(prompt_id) <= MAX_ID_CHARS:
        return f"prompt_id must be a string of 1 to {MAX_ID_CHARS} characters"
    if client_id is not None and (not isinstance(client_id, str) or len(client_id) > MAX_ID_CHARS):
        return f"client_id must be a string of at most {MAX_ID_CHARS} characters"
    if not isinstance(extra_data, dict):
        return f"extra_data must be an object, got {type(extra_data).__name__}"
    pnginfo = extra_data.get("extra_pnginfo")
    if pnginfo is not None and not isinstance(pnginfo, dict):
        return f"extra_data.extra_pnginfo must be an object, got {type(pnginfo).__name__}"
    workflow = (pnginfo or {}).get("workflow")
    if workflow is not None and not isinstance(workflow, dict):
        return f"extra_data.extra_pnginfo.workflow must be an object, got {type(workflow).__name__}"
    if json_depth(extra_data, MAX_EXTRA_DEPTH) > MAX_EXTRA_DEPTH:
        return f"extra_data is nested more than {MAX_EXTRA_DEPTH} levels deep"
    return None


@dataclass(frozen=True)
class _Submission:
    """One checked ``POST /prompt`` body, before conversion and validation."""

    graph: dict[str, Any]
    prompt_id: str
    client_id: str | None
    extra_data: dict[str, Any]
    targets: list[str] | None
    front: bool


def _admit(app: web.Application, sub: _Submission) -> web.Response:
    """Convert, validate and enqueue one submission: the answer of ``POST /prompt``.

    Runs on the event loop for graphs up to ``INLINE_ADMIT_MAX_NODES`` nodes, else in one thread hop for
    all three (each ``asyncio.to_thread`` round trip cost 0.2-0.4 ms on the 2-core dev VM, measured
    2026-11-30). A valid prompt's plan goes to the executor's memo so the worker does not
    validate it again (:meth:`app.executor.Executor.remember`).
    """
    from fewstep.app import validation

    registry, store, executor = app[REGISTRY], app[STORE], app[EXECUTOR]
    try:
        prompt = _to_api_format(sub.graph, registry)
    except (ValueError, KeyError, TypeError) as exc:
        return _prompt_error("invalid_prompt", f"Invalid prompt: could not convert the UI workflow: {exc}")
    result = validation.validate_prompt(prompt, registry, sub.targets)
    if not result.ok:
        return web.json_response({"error": result.error, "node_errors": result.node_errors}, status=400)
    outputs = list(result.outputs)                    # the job's targets: what the worker runs it with
    remember = getattr(executor, "remember", None)   # the real executor; test doubles may lack it
    if remember is not None:                          # before enqueue: the worker may claim the job at once
        remember(prompt, outputs, result, registry)
    extra_data = {**sub.extra_data, "create_time": int(time.time() * 1000)}
    if sub.client_id:
        extra_data["client_id"] = sub.client_id
    try:
        number = store.enqueue(sub.prompt_id, prompt, extra_data, outputs, sub.client_id, front=sub.front)
    except ValueError as exc:   # e.g. a duplicate prompt_id
        return _prompt_error("invalid_prompt", f"Invalid prompt_id {sub.prompt_id!r}: {exc}")
    worker = app[RUNTIME].worker
    if worker is not None:   # from this thread: the worker claims the job while the answer goes out
        worker.wake()
    return web.json_response({"prompt_id": sub.prompt_id, "number": number, "node_errors": result.node_errors})


async def post_prompt(request: web.Request) -> web.Response:
    """Validate and enqueue a graph: ``{"prompt", "client_id"?, "prompt_id"?, "extra_data"?, "front"?}``."""
    body = json_object(await read_json(request, request.app[OPTIONS].max_graph_bytes))
    if "prompt" not in body:
        return _prompt_error("no_prompt", "No prompt provided", "the request body needs a 'prompt' key")
    if not isinstance(body["prompt"], dict):
        return _prompt_error("invalid_prompt", "Invalid prompt: 'prompt' must be a JSON object",
                             f"got {type(body['prompt']).__name__}")
    extra_data = body.get("extra_data") or {}
    prompt_id = body.get("prompt_id") or str(uuid.uuid4())
    client_id = body.get("client_id")
    problem = _request_problem(extra_data, prompt_id, client_id)
    if problem is not None:
        return _prompt_error("invalid_prompt", f"Invalid request: {problem}")
    sub = _Submission(body["prompt"], prompt_id, client_id, extra_data, _parse_targets(body), bool(body.get("front")))
    if len(sub.graph) <= INLINE_ADMIT_MAX_NODES:   # as ComfyUI: validate on the event loop
        response = _admit(request.app, sub)
    else:
        response = await asyncio.to_thread(_admit, request.app, sub)
    if response.status == 200:
        request.app[HUB].schedule_status()
    return response


async def get_prompt(request: web.Request) -> web.Response:
    remaining = await queue_remaining(_store(request))
    return web.json_response({"exec_info": {"queue_remaining": remaining}})


async def get_queue(request: web.Request) -> web.Response:
    store = _store(request)

    def snapshot() -> dict[str, list]:
        return {"queue_running": [j.queue_item() for j in store.running()],
                "queue_pending": [j.queue_item() for j in store.pending()]}
    return web.json_response(await asyncio.to_thread(snapshot))


def _ids(body: dict[str, Any], key: str) -> list[str]:
    ids = body.get(key, [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise web.HTTPBadRequest(text=f"'{key}' must be a list of prompt ids (strings)")
    return ids


async def post_queue(request: web.Request) -> web.Response:
    """``{"clear": true}`` and/or ``{"delete": [ids]}`` on pending jobs."""
    body = json_object(await read_json(request))
    store = _store(request)
    if body.get("clear"):
        await asyncio.to_thread(store.clear_pending)
    if "delete" in body:
        await asyncio.to_thread(store.delete_pending, _ids(body, "delete"))
    request.app[HUB].schedule_status()
    return web.json_response({})


def _int_param(request: web.Request, name: str, default: int | None, minimum: int = 0) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if not minimum <= value <= MAX_QUERY_INT:   # SQLite integers are 64-bit: 10**23 overflowed into a 500
        raise web.HTTPBadRequest(text=f"query parameter {name!r} must be between {minimum} and "
                                      f"{MAX_QUERY_INT}, got {raw}")
    return value


async def get_history(request: web.Request) -> web.Response:
    max_items = _int_param(request, "max_items", None, 0)
    offset = _int_param(request, "offset", -1, 0)   # absent: the newest max_items
    history = await asyncio.to_thread(_store(request).history, max_items, offset)
    return web.json_response(history)


async def get_history_entry(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    entry = await asyncio.to_thread(_store(request).history_entry, prompt_id)
    return web.json_response({prompt_id: entry} if entry is not None else {})


async def post_history(request: web.Request) -> web.Response:
    body = json_object(await read_json(request))
    store = _store(request)
    if body.get("clear"):
        await asyncio.to_thread(store.clear_history)
    if "delete" in body:
        await asyncio.to_thread(store.delete_history, _ids(body, "delete"))
    return web.json_response({})


def _job_query(request: web.Request) -> dict[str, Any]:
    statuses = [s for s in request.query.get("status", "").split(",") if s] or list(JOB_STATUSES)
    unknown = [s for s in statuses if s not in JOB_STATUSES]
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown job status {unknown}; expected some of {list(JOB_STATUSES)}")
    sort_by = request.query.get("sort_by", "created_at")
    if sort_by not in SORT_KEYS:
        raise web.HTTPBadRequest(text=f"sort_by must be one of {list(SORT_KEYS)}, got {sort_by!r}")
    sort_order = request.query.get("sort_order", "desc")
    if sort_order not in ("asc", "desc"):
        raise web.HTTPBadRequest(text=f"sort_order must be 'asc' or 'desc', got {sort_order!r}")
    return {"statuses": statuses, "sort_by": sort_by, "sort_order": sort_order,
            "limit": _int_param(request, "limit", None, 1), "offset": _int_param(request, "offset", 0, 0)}


async def get_jobs(request: web.Request) -> web.Response:
    """``/api/jobs?status=a,b&sort_by=&sort_order=&limit=&offset=&workflow_id=``."""
    query = _job_query(request)
    jobs, total = await asyncio.to_thread(_store(request).jobs, **query,
                                          workflow_id=request.query.get("workflow_id") or None)
    limit = query["limit"] if query["limit"] is not None else max(total, 1)
    pagination = {"offset": query["offset"], "limit": limit, "total": total,
                  "has_more": query["offset"] + len(jobs) < total}
    return web.json_response({"jobs": jobs, "pagination": pagination})


async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    job = await asyncio.to_thread(_store(request).job_detail, job_id)
    if job is None:
        raise web.HTTPNotFound(text=f"no job with id {job_id!r}")
    return web.json_response(job)


async def get_job_assets(request: web.Request) -> web.Response:
    """Outputs of a job as the editor's asset list (files it can show)."""
    job_id = request.match_info["job_id"]
    entry = await asyncio.to_thread(_store(request).history_entry, job_id)
    if entry is None:
        raise web.HTTPNotFound(text=f"no finished job with id {job_id!r}")
    assets = []
    for node_id, ui in (entry.get("outputs") or {}).items():
        for key, items in ui.items():
            for index, item in enumerate(items if isinstance(items, list) else []):
                if isinstance(item, dict) and "filename" in item:
                    assets.append({"id": f"{job_id}:{node_id}:{key}:{index}", "name": item["filename"],
                                   "node_id": node_id, "output_key": key, "output_index": index})
    return web.json_response({"job_id": job_id, "assets": assets,
                              "pagination": {"offset": 0, "limit": len(assets), "total": len(assets),
                                             "has_more": False}})


async def _cancel(request: web.Request, job_ids: list[str]) -> None:
    """Pending jobs become ``cancelled`` (still listed by /jobs); running ones are interrupted."""
    await asyncio.to_thread(_store(request).cancel_pending, job_ids)
    for job_id in job_ids:
        await _interrupt_job(request.app, job_id)
    request.app[HUB].schedule_status()


async def _interrupt_job(app: web.Application, prompt_id: str) -> bool:
    """Interrupt ``prompt_id`` wherever it runs: a worker of this server, or (a shared queue) through the
    store, whose flag the worker running it sees at its next heartbeat, on whichever host."""
    worker = app[RUNTIME].worker
    if worker is not None and worker.interrupt(prompt_id):
        return True
    store = app[STORE]
    if getattr(store, "exclusive", True):
        return False
    return await asyncio.to_thread(store.request_interrupt, prompt_id)


async def post_job_cancel(request: web.Request) -> web.Response:
    await _cancel(request, [request.match_info["job_id"]])
    return web.json_response({})


async def post_jobs_cancel(request: web.Request) -> web.Response:
    body = json_object(await read_json(request))
    await _cancel(request, _ids(body, "job_ids"))
    return web.json_response({})


async def post_interrupt(request: web.Request) -> web.Response:
    """Interrupt the running job; with ``{"prompt_id"}`` only if that job is the one running."""
    body = await read_json(request, required=False)
    prompt_id = json_object(body).get("prompt_id") if body is not None else None
    if prompt_id is not None and not isinstance(prompt_id, str):
        raise web.HTTPBadRequest(text="'prompt_id' must be a string")
    if prompt_id is not None:
        await _interrupt_job(request.app, prompt_id)
    elif request.app[RUNTIME].worker is not None:
        request.app[RUNTIME].worker.interrupt(None)
    return web.json_response({})


async def post_free(request: web.Request) -> web.Response:
    body = json_object(await read_json(request, required=False) or {})
    unload, free = body.get("unload_models", False), body.get("free_memory", False)
    if not isinstance(unload, bool) or not isinstance(free, bool):
        raise web.HTTPBadRequest(text="'unload_models' and 'free_memory' must be booleans")
    worker = request.app[RUNTIME].worker
    if worker is not None:
        worker.request_free(unload, free)
    return web.json_response({})


def add_job_routes(add: Any) -> None:
    """Register the queue routes through ``add(method, path, handler)`` (which adds the /api twin)."""
    add("GET", "/prompt", get_prompt)
    add("POST", "/prompt", post_prompt)
    add("GET", "/queue", get_queue)
    add("POST", "/queue", post_queue)
    add("GET", "/history", get_history)
    add("GET", "/history/{prompt_id}", get_history_entry)
    add("POST", "/history", post_history)
    add("GET", "/jobs", get_jobs)
    add("POST", "/jobs/cancel", post_jobs_cancel)
    add("GET", "/jobs/{job_id}", get_job)
    add("GET", "/jobs/{job_id}/assets", get_job_assets)
    add("POST", "/jobs/{job_id}/cancel", post_job_cancel)
    add("POST", "/interrupt", post_interrupt)
    add("POST", "/free", post_free)
