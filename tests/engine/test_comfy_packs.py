"""Issue #14 item 11: packs shaped like popular ComfyUI custom node packs load unchanged from a
``custom_nodes`` folder and run a graph each (``comfy_packs/README.md`` says which pack each stands for)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_helpers import Recorder, n

from fewstep.app.api import Paths
from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.registry import load_registry

COMFY_PACKS = Path(__file__).parent / "comfy_packs"
EXPECTED = {"logic_like": 6, "math_like": 6, "postprocess_like": 2, "ws_image_like": 1, "pysssss_like": 2,
            "feedback_like": 1, "image_source": 2}


@pytest.fixture(scope="module")
def registry():
    return load_registry([COMFY_PACKS], entry_points=False, builtin=False)


@pytest.fixture
def run(registry, tmp_path):
    paths = Paths(model_roots=(tmp_path / "models",), input_dir=tmp_path / "input", output_dir=tmp_path / "output",
                  temp_dir=tmp_path / "temp", user_dir=tmp_path / "user")
    executor = Executor(registry, CacheSet("lru:64"), paths)

    def go(prompt: dict, **kw):
        recorder = Recorder()
        result = executor.execute(prompt, prompt_id="p", emit=recorder, **kw)
        assert result.status == "success", json.dumps(result.error, default=str)[:2000]
        return result, recorder

    go.paths = paths
    return go


def test_every_pack_loads_unchanged(registry):
    assert registry.failures == []
    assert {p.name: len(p.node_names) for p in registry.packs} == EXPECTED
    info = registry.get("Compare-L").object_info()
    assert info["input"]["required"]["a"] == ["*", {"default": 0}]  # the wildcard's text, as ComfyUI shows it


def test_logic_pack(run):
    """Wildcard links of any type, a bare-string RETURN_NAMES, a node run through nodes.NODE_CLASS_MAPPINGS."""
    prompt = {"1": n("Int-L", value=3), "2": n("Compare-L", a=["1", 0], b=2, comparison="a > b"),
              "3": n("String-L", value="yes"), "4": n("String-L", value="no"),
              "5": n("If-L", ANY=["2", 0], IF_TRUE=["3", 0], IF_FALSE=["4", 0]),
              "6": n("DebugPrint-L", ANY=["5", 0]),
              "7": n("If ANY return A else B-L", ANY=["2", 0], NODE_TRUE="String-L", NODE_FALSE="Int-L")}
    result, _ = run(prompt)
    assert result.outputs["6"] == {"text": ["'yes'"]}
    assert result.outputs["7"] == {"ran": [""]}


def test_math_pack(run):
    """Custom types (NUMBER, BOOL, VEC2) from a package with relative imports."""
    prompt = {"1": n("ML_ComposeVec2", x=3.0, y=4.0), "2": n("ML_BreakoutVec2", a=["1", 0]),
              "3": n("ML_NumberBinary", op="Pow", a=["2", 0], b=2), "4": n("ML_NumberBinary", op="Pow", a=["2", 1], b=2),
              "5": n("ML_NumberBinary", op="Add", a=["3", 0], b=["4", 0]), "6": n("ML_NumberUnary", op="Sqrt", a=["5", 0]),
              "7": n("ML_IntToNumber", a=5), "8": n("ML_NumberCondition", op="Eq", a=["6", 0], b=["7", 0])}
    result, _ = run(prompt)
    assert result.outputs["8"] == {"result": [True]}


def test_postprocess_pack(run):
    prompt = {"1": n("FlatImage", width=8, height=6, batch=2, value=0.5), "2": n("PP_BoxBlur", image=["1", 0], radius=1),
              "3": n("PP_Sepia", image=["2", 0], strength=1.0), "4": n("ImageProbe", image=["3", 0])}
    result, _ = run(prompt)
    probe = result.outputs["4"]
    assert probe["shape"] == [[2, 6, 8, 3]] and 0.0 < probe["mean"][0] < probe["max"][0] <= 1.0


def test_websocket_image_pack_streams_png_previews(run):
    """ComfyUI's websocket_image_save node: each image goes out as a ProgressBar preview."""
    prompt = {"1": n("FlatImage", width=20, height=10, batch=3, value=0.5), "2": n("WebsocketImageSend", images=["1", 0])}
    result, recorder = run(prompt)
    previews = recorder.of("preview")
    assert len(previews) == 3
    first = previews[0]["image"]
    image = first[1] if isinstance(first, tuple) else first
    assert image.size == (20, 10)
    assert [p["value"] for p in recorder.of("progress")] == [0, 1, 2]
    again, _ = run(prompt)
    assert "2" in again.executed  # IS_CHANGED returns the time: never cached


def test_pysssss_pack(run):
    """INPUT_IS_LIST with list-wrapped hidden values (ComfyUI ``get_input_data`` + ``_async_map_node_over_list``),
    folder_paths folders, VALIDATE_INPUTS(**kwargs), IS_CHANGED = NaN."""
    workflow = {"nodes": [{"id": 2, "widgets_values": []}]}
    prompt = {"1": n("String-L", value="hello"), "2": n("ShowText|like", text=["1", 0]),
              "3": n("SaveText|like", root_dir="output", file="a.txt", text=["2", 0])}
    result, _ = run(prompt, extra_data={"extra_pnginfo": {"workflow": workflow}})
    assert result.outputs["2"] == {"text": ["hello"]}
    assert workflow["nodes"][0]["widgets_values"] == [["hello"]]
    assert (run.paths.output_dir / "a.txt").read_text() == "hello"
    again, _ = run(prompt, extra_data={"extra_pnginfo": {"workflow": workflow}})
    assert "3" in again.executed and "2" in again.cached


def test_feedback_pack_runs_without_a_server(run):
    """send_sync without a running server (``fewstep run``) is dropped, not an error."""
    result, _ = run({"1": n("CountDownFeedback", count=3)})
    assert result.executed == ["1"]
