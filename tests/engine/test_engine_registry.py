"""Registry and packs (failures, duplicates, entry points), the classic-protocol pack run unchanged, and
every validation error type."""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path

import pytest
from engine_helpers import n, run

from fewstep.app.registry import load_registry
from fewstep.app.validation import validate_prompt

PACKS = Path(__file__).parent / "packs"


# -- registry -------------------------------------------------------------------------------------
def test_failing_and_duplicate_packs_are_reported_and_the_rest_works(tmp_path, make_executor):
    extra = tmp_path / "custom_nodes"
    (extra / "raises").mkdir(parents=True)
    (extra / "raises" / "__init__.py").write_text("raise RuntimeError('pack is broken')\n")
    (extra / "dupe.py").write_text(
        "class StubInt:\n    @classmethod\n    def INPUT_TYPES(cls): return {'required': {}}\n"
        "    RETURN_TYPES = ('INT',)\n    FUNCTION = 'f'\n    def f(self): return (1,)\n"
        "class Fresh(StubInt):\n    pass\n"
        "NODE_CLASS_MAPPINGS = {'StubInt': StubInt, 'FreshNode': Fresh}\n")
    (extra / "off.py.disabled").write_text("raise SystemExit\n")
    registry = load_registry([PACKS, extra], entry_points=False, builtin=False)
    reasons = {f.pack: f.reason for f in registry.failures}
    assert reasons["raises"] == "import failed: RuntimeError: pack is broken"
    assert "'StubInt' is already defined by pack 'stub_pack'" in reasons["dupe"]
    assert registry.get("StubInt").pack == "stub_pack" and registry.get("FreshNode").pack == "dupe"
    assert len(registry.failures) == 2
    from fewstep.app.executor import Executor
    result, _ = run(Executor(registry), {"1": n("StubInt", value=2), "2": n("StubSink", value=["1", 0])})
    assert result.outputs == {"2": {"values": [2]}}


def test_entry_point_packs_load(monkeypatch):
    class FakeEntryPoint:
        name, value = "ep_pack", "ep_module:entrypoint"

        def load(self):
            from fewstep.bench.engine import BenchConst
            return lambda: [BenchConst]

    def fake_entry_points(group):
        return [FakeEntryPoint()] if group == "fewstep.nodes" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    registry = load_registry([], entry_points=True, builtin=False)
    assert registry.get("BenchConst").pack == "ep_pack"
    assert registry.packs[0].source == "entry_point"


def test_object_info_of_classic_and_declarative_nodes(registry):
    classic = registry.get("LazySwitch").object_info()
    assert classic["input"]["required"]["on_true"] == ["*", {"lazy": True}]
    assert classic["python_module"] == "custom_nodes.comfy_style_pack" and classic["category"] == "comfy_style"
    show = registry.get("ShowValue").object_info()
    assert show["output_node"] is True and show["display_name"] == "Show Value"
    assert show["input"]["hidden"]["unique_id"] == "UNIQUE_ID"
    assert registry.get("MakeList").object_info()["output_is_list"] == [True]
    widgets = registry.get("StubWidgets").object_info()
    assert widgets["input"]["required"]["mode"] == [["fast", "slow"], {"default": "fast"}]
    assert widgets["input_order"]["required"] == ["mode", "ratio", "flag", "text"]
    pack = next(p for p in registry.packs if p.name == "comfy_style_pack")
    assert pack.web_dir is None  # WEB_DIRECTORY ./js does not exist: not served


# -- the ComfyUI-style pack, unchanged -----------------------------------------------------------
def test_comfy_pack_loop_list_lazy_validation_ui(make_executor):
    prompt = {"1": n("IntConstant", value=10), "2": n("CountLoop", value=["1", 0], count=3),
              "3": n("MakeList", count=4), "4": n("JoinList", items=["3", 0], sep="-"),
              "5": n("LazySwitch", switch=True, on_true=["2", 0], on_false=["4", 0]),
              "6": n("ShowValue", value=["5", 0]), "7": n("ShowValue", value=["4", 0])}
    result, _ = run(make_executor(), prompt, extra_data={"extra_pnginfo": {"workflow": {}}})
    assert result.status == "success"
    assert result.outputs["6"] == {"text": ["13"], "class": ["ShowValue"], "workflow": [True]}
    assert result.outputs["7"]["text"] == ["0-1-2-3"]
    assert "2.0.add" in result.executed


def test_comfy_pack_lazy_branch_skipped(make_executor):
    prompt = {"1": n("IntConstant", value=1), "2": n("AddInts", a=["1", 0], b=1),
              "3": n("CountLoop", value=["1", 0], count=50),
              "5": n("LazySwitch", switch=False, on_true=["3", 0], on_false=["2", 0]),
              "6": n("ShowValue", value=["5", 0])}
    result, _ = run(make_executor(), prompt)
    assert result.outputs["6"]["text"] == ["2"] and "3" not in result.executed


def test_comfy_pack_async_not_idempotent_is_changed_blocker(make_executor, tmp_path):
    executor = make_executor()
    note = tmp_path / "note.txt"
    note.write_text("hello")
    prompt = {"1": n("IntConstant", value=1),
              "a": n("AsyncSleep", value=["1", 0], seconds=0.3), "b": n("AsyncSleep", value=["1", 0], seconds=0.3),
              "sa": n("ShowValue", value=["a", 0]), "sb": n("ShowValue", value=["b", 0]),
              "r1": n("RandomInt", high=10**9), "r2": n("RandomInt", high=10**9),
              "s1": n("ShowValue", value=["r1", 0]), "s2": n("ShowValue", value=["r2", 0]),
              "t": n("ReadTextFile", path=str(note)), "st": n("ShowValue", value=["t", 0]),
              "g": n("Gate", value=["1", 0], open=False, message=""), "sg": n("ShowValue", value=["g", 0])}
    started = time.perf_counter()
    result, _ = run(executor, prompt)
    assert result.status == "success" and time.perf_counter() - started < 0.55  # the two sleeps overlap
    assert {"r1", "r2"} <= set(result.executed)  # NOT_IDEMPOTENT: not shared
    assert result.outputs["st"]["text"] == ["hello"] and "sg" not in result.outputs
    again, _ = run(executor, prompt)
    assert "t" not in again.executed  # IS_CHANGED unchanged (same mtime)


def test_comfy_pack_custom_validation(registry):
    bad = validate_prompt({"1": n("EvenOnly", value=3), "2": n("ShowValue", value=["1", 0])}, registry)
    error = bad.node_errors["1"]["errors"][0]
    assert error["type"] == "custom_validation_failed" and error["message"] == "EvenOnly needs an even value"


# -- validation: every error type ----------------------------------------------------------------
def errors_of(registry, prompt, node="1", **kw):
    result = validate_prompt(prompt, registry, **kw)
    assert not result.ok
    return [e["type"] for e in result.node_errors.get(node, {}).get("errors", [])], result


@pytest.mark.parametrize("inputs, kind", [
    ({}, "required_input_missing"),
    ({"value": 2000}, "value_bigger_than_max"),
    ({"value": -2000}, "value_smaller_than_min"),
    ({"value": "abc"}, "invalid_input_type"),
    ({"value": 1.5}, "invalid_input_type"),
])
def test_constant_errors(registry, inputs, kind):
    types, result = errors_of(registry, {"1": n("StubInt", **inputs), "2": n("StubSink", value=["1", 0])})
    assert types == [kind]
    assert result.node_errors["1"]["dependent_outputs"] == ["2"] and result.node_errors["1"]["class_type"] == "StubInt"
    assert result.error["type"] == "prompt_outputs_failed_validation"


def test_combo_and_coercion(registry):
    base = {"mode": "fast", "ratio": "0.25", "flag": "true", "text": 5}
    ok = validate_prompt({"1": n("StubWidgets", **base), "2": n("StubSink", value=["1", 0])}, registry)
    assert ok.ok and ok.nodes["1"].inputs == {"mode": "fast", "ratio": 0.25, "flag": True, "text": "5"}
    types, _ = errors_of(registry, {"1": n("StubWidgets", **{**base, "mode": "medium"}),
                                    "2": n("StubSink", value=["1", 0])})
    assert types == ["value_not_in_list"]


def test_link_errors(registry):
    sink = n("StubSink", value=["1", 0])
    assert errors_of(registry, {"1": n("StubAdd", a=["9", 0], b=1), "2": sink})[0] == ["bad_linked_input"]
    assert errors_of(registry, {"0": n("StubInt", value=1), "1": n("StubAdd", a=["0", 3], b=1), "2": sink}
                     )[0] == ["bad_linked_input"]
    assert errors_of(registry, {"0": n("StubMakeA"), "1": n("StubNeedsB", b=["0", 0])})[0] == ["return_type_mismatch"]


def test_unknown_class_cycle_and_no_outputs(registry):
    types, result = errors_of(registry, {"1": n("NoSuchNode"), "2": n("StubSink", value=["1", 0])})
    assert types == ["missing_node_type"] and result.error["type"] == "missing_node_type"
    cycle = {"1": n("StubAdd", a=["2", 0], b=1), "2": n("StubAdd", a=["1", 0], b=1), "3": n("StubSink", value=["2", 0])}
    assert errors_of(registry, cycle)[0] == ["dependency_cycle"]
    _, result = errors_of(registry, {"1": n("StubInt", value=1)})
    assert result.error["type"] == "prompt_no_outputs"
    _, result = errors_of(registry, {"1": "not a node"})
    assert result.error["type"] == "invalid_prompt"


def test_one_valid_output_is_enough(registry):
    prompt = {"1": n("StubInt", value=1), "2": n("StubSink", value=["1", 0]), "3": n("StubEven", value=3),
              "4": n("StubSink", value=["3", 0])}
    result = validate_prompt(prompt, registry)
    assert result.ok and result.outputs == ["2"]
    assert result.node_errors["3"]["errors"][0]["type"] == "custom_validation_failed"
    assert result.node_errors["3"]["dependent_outputs"] == ["4"]


def test_long_chain_validates_iteratively(registry):
    prompt = {"0": n("StubInt", value=0)}
    for i in range(1, 5001):
        prompt[str(i)] = n("StubAdd", a=[str(i - 1), 0], b=1)
    prompt["s"] = n("StubSink", value=["5000", 0])
    assert validate_prompt(prompt, registry).ok
