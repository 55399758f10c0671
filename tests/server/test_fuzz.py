"""Issue #24 item 12: a bounded, seeded fuzzer over the server's input surface.

Generated API graphs, UI workflows, ``/prompt`` bodies, uploads and user-data requests must each get an
answer below 500 within a timeout (no crash, no hang), never write outside the server's home, and leave
the server answering. The UI -> API converter is also fuzzed directly: it may only raise its own
``WorkflowConversionError``.

Examples are derived from a fixed seed (``derandomize``), so a failure reproduces. The default run takes a
few seconds; ``FEWSTEP_FUZZ_EXAMPLES=2000`` (per test) searches longer.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fewstep.app.config import Config  # noqa: E402
from fewstep.app.workflow import WorkflowConversionError, ui_to_api  # noqa: E402

EXAMPLES = int(os.environ.get("FEWSTEP_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=list(HealthCheck))
ANSWER_WITHIN_S = 15.0

# -- strategies ----------------------------------------------------------------------------------
CLASSES = ["SolidImage", "SaveTestImage", "ImageStats", "SlowCount", "Explode", "TrainToy", "Nope", "", "*"]
INPUT_NAMES = ["width", "height", "red", "images", "filename_prefix", "steps", "delay", "tag", "why", "x", ""]
NODE_IDS = ["1", "2", "3", "10", "a", "", "1.0", "-1"]
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
           | st.sampled_from(NODE_IDS))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
links = st.tuples(st.sampled_from(NODE_IDS) | scalars, st.integers(-2, 3) | st.floats() | scalars).map(list)
input_values = links | json_values | st.builds(lambda v: {"__value__": v}, json_values)
api_nodes = st.fixed_dictionaries({"class_type": st.sampled_from(CLASSES) | scalars},
                                  optional={"inputs": st.dictionaries(st.sampled_from(INPUT_NAMES), input_values,
                                                                      max_size=5) | json_values,
                                            "_meta": json_values})
api_graphs = st.dictionaries(st.sampled_from(NODE_IDS) | st.text(max_size=4), api_nodes | json_values, max_size=6)

ui_slots = st.fixed_dictionaries({}, optional={"name": st.sampled_from(INPUT_NAMES) | scalars,
                                               "link": st.integers(-1, 6) | scalars, "type": scalars,
                                               "links": st.lists(st.integers(0, 6) | scalars, max_size=3) | scalars,
                                               "widget": json_values})
ui_nodes = st.fixed_dictionaries(
    {"id": st.integers(-1, 6) | scalars},
    optional={"type": st.sampled_from(CLASSES + ["PrimitiveNode", "Reroute", "Note", "sub-1"]) | scalars,
              "inputs": st.lists(ui_slots | scalars, max_size=4) | scalars,
              "outputs": st.lists(ui_slots | scalars, max_size=3) | scalars,
              "widgets_values": st.lists(scalars, max_size=5) | json_values,
              "mode": st.sampled_from([0, 2, 4]) | scalars, "properties": json_values})
ui_links = st.lists(st.integers(-1, 6) | st.floats() | scalars, min_size=0, max_size=7) | st.fixed_dictionaries(
    {"id": st.integers(0, 6) | scalars},
    optional={"origin_id": st.integers(-1, 6) | scalars, "origin_slot": st.integers(-1, 3) | st.floats(),
              "target_id": st.integers(-1, 6) | scalars, "target_slot": st.integers(-1, 3) | scalars,
              "type": scalars})


def _workflow(subgraphs: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"nodes": st.lists(ui_nodes | scalars, max_size=5), "links": st.lists(ui_links | scalars, max_size=6)},
        optional={"definitions": st.fixed_dictionaries({"subgraphs": subgraphs}) | json_values,
                  "extra": st.fixed_dictionaries({}, optional={"groupNodes": json_values}) | json_values,
                  "version": st.sampled_from([0.4, 1]) | scalars, "inputs": json_values, "outputs": json_values})


inner_workflows = _workflow(st.just([])).map(lambda w: {**w, "id": "sub-1", "name": "sub"})
ui_workflows = _workflow(st.lists(inner_workflows | scalars, max_size=2))
bodies = st.fixed_dictionaries({}, optional={
    "prompt": api_graphs | ui_workflows | json_values, "prompt_id": scalars, "client_id": scalars,
    "extra_data": st.fixed_dictionaries({}, optional={"extra_pnginfo": st.fixed_dictionaries(
        {}, optional={"workflow": ui_workflows | json_values}) | json_values}) | json_values,
    "front": scalars, "partial_execution_targets": st.lists(scalars, max_size=3) | scalars, "number": scalars})
names = st.lists(st.sampled_from(list("ab.-_/\\%:\x00 é~\n") + ["..", "../", "/etc"]), max_size=6).map("".join)


# -- a server that admits but never runs jobs (the fuzzer tests the HTTP surface, not the nodes) -----
class _IdleWorker:
    running_prompt_id = None

    def __init__(self) -> None:
        self.emit: Any = None

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def wake(self) -> None: ...
    def interrupt(self, prompt_id: str | None = None) -> bool: return False
    def request_free(self, unload_models: bool, free_memory: bool) -> None: ...


class _Server:
    """The app on its own event loop, driven synchronously from inside hypothesis examples."""

    def __init__(self, config: Config, registry: Any) -> None:
        from aiohttp.test_utils import TestClient, TestServer

        from fewstep.app.cache import CacheSet
        from fewstep.app.executor import Executor
        from fewstep.app.server import create_app
        from fewstep.app.storage import JobStore

        self.loop = asyncio.new_event_loop()
        app = create_app(config, registry, Executor(registry, CacheSet("none"), config.paths()),
                         JobStore(config.db_path), worker=_IdleWorker())  # type: ignore[arg-type]
        self.client = TestClient(TestServer(app), loop=self.loop,
                                 timeout=aiohttp.ClientTimeout(total=ANSWER_WITHIN_S))
        self.loop.run_until_complete(self.client.start_server())

    def request(self, method: str, path: str, **kw: Any) -> int:
        async def go() -> int:
            async with self.client.request(method, path, **kw) as response:
                await response.read()
                return response.status
        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


@pytest.fixture
def server(config: Config, registry: Any) -> Iterator[_Server]:
    served = _Server(config, registry)
    yield served
    served.close()


def _outside_home(config: Config) -> set[Path]:
    root = config.home.parent
    return {p for p in root.rglob("*") if not p.is_relative_to(config.home)}


def _assert_answers(server: _Server, status: int, what: Any) -> None:
    assert status < 500, what
    assert server.request("GET", "/api/prompt") == 200


# -- the tests -----------------------------------------------------------------------------------
@FUZZ
@given(workflow=ui_workflows)
def test_ui_converter_raises_only_its_own_error(registry: Any, workflow: dict[str, Any]) -> None:
    try:
        prompt = ui_to_api(workflow, registry)
    except WorkflowConversionError:
        return
    json.dumps(prompt)   # what it returns is a JSON-able API prompt


@FUZZ
@given(body=bodies)
def test_prompt_answers_below_500(server: _Server, body: dict[str, Any]) -> None:
    status = server.request("POST", "/api/prompt", data=json.dumps(body), headers={"Content-Type": "application/json"})
    _assert_answers(server, status, body)
    for path in ("/api/history", "/api/jobs", "/api/queue"):    # what was admitted never breaks a listing
        assert server.request("GET", path) == 200, path


@FUZZ
@given(graph=api_graphs)
def test_api_graphs_answer_below_500(server: _Server, graph: dict[str, Any]) -> None:
    status = server.request("POST", "/api/prompt", json={"prompt": graph})
    _assert_answers(server, status, graph)


@FUZZ
@given(name=names, subfolder=names, kind=st.sampled_from(["input", "output", "temp", "", "x"]),
       overwrite=st.sampled_from(["true", "1", "false", ""]), data=st.binary(max_size=64))
def test_uploads_answer_below_500_and_stay_home(server: _Server, config: Config, name: str, subfolder: str,
                                                kind: str, overwrite: str, data: bytes) -> None:
    before = _outside_home(config)
    form = aiohttp.FormData()
    for key, value in (("type", kind), ("subfolder", subfolder), ("overwrite", overwrite)):
        form.add_field(key, value)
    try:
        form.add_field("image", data, filename=name, content_type="image/png")
        status = server.request("POST", "/api/upload/image", data=form)
    except ValueError:   # the client itself refuses header-breaking names (newline, NUL)
        return
    _assert_answers(server, status, (name, subfolder, kind))
    assert _outside_home(config) == before


@FUZZ
@given(path=names, dest=names, body=st.binary(max_size=64), overwrite=st.sampled_from(["true", "false", ""]),
       method=st.sampled_from(["GET", "POST", "DELETE", "MOVE", "LIST", "V2"]))
def test_userdata_answers_below_500_and_stays_home(server: _Server, config: Config, path: str, dest: str,
                                                   body: bytes, overwrite: str, method: str) -> None:
    before = _outside_home(config)
    file = quote(path, safe="")
    if method == "MOVE":
        status = server.request("POST", f"/api/userdata/{file}/move/{quote(dest, safe='')}?overwrite={overwrite}")
    elif method == "LIST":
        status = server.request("GET", f"/api/userdata?dir={file}&recurse=true&full_info=true")
    elif method == "V2":
        status = server.request("GET", f"/api/v2/userdata?path={file}")
    else:
        status = server.request(method, f"/api/userdata/{file}?overwrite={overwrite}", data=body)
    _assert_answers(server, status, (method, path, dest))
    assert _outside_home(config) == before
