"""Issue #14 items 1-7: the classic node protocol executed exactly as ComfyUI executes it.

Each test runs ``packs/compat_pack`` (a pack written like a ComfyUI custom pack) and names the ComfyUI
source that defines the behaviour it checks.
"""

from __future__ import annotations

import sys

import pytest
from engine_helpers import n, run

from fewstep.app.validation import validate_prompt


@pytest.fixture
def calls(registry):
    pack = sys.modules["fewstep_custom_nodes.compat_pack"]
    pack.CALLS.clear()
    return pack.CALLS


def _mix_graph(a: int, mix: str = "LazyMix") -> dict:
    return {"1": n("CountingInt", value=a), "2": n("CountingInt", value=5),
            "3": n(mix, a=["1", 0], b=["2", 0]), "4": n("ShowInt", value=["3", 0])}


@pytest.mark.parametrize("mix", ["LazyMix", "AsyncLazyMix"])
def test_lazy_input_served_from_cache_reaches_the_node(make_executor, mix):
    """Item 1. ComfyUI ``execution.py::execute``: after ``check_lazy_status`` names inputs whose producers
    are already cached, the node is called with inputs re-read by ``get_input_data`` (not ``None``)."""
    executor = make_executor()
    first, _ = run(executor, _mix_graph(1, mix))
    assert first.status == "success", first.error
    assert first.outputs["4"] == {"text": ["6"]}
    second, _ = run(executor, _mix_graph(2, mix))  # node 2 (the lazy input) is cached now
    assert second.status == "success", second.error
    assert "2" in second.cached
    assert second.outputs["4"] == {"text": ["7"]}


def test_undeclared_linked_inputs_are_passed(make_executor, calls):
    """Item 2. ComfyUI ``execution.py::get_input_data`` loops over the prompt's inputs: a link is fetched
    whether or not ``INPUT_TYPES`` declares it; an undeclared constant is dropped."""
    prompt = {"1": n("CountingInt", value=2), "2": n("CountingInt", value=3),
              "3": n("SumKwargs", base=1, x=["1", 0], y=["2", 0], z=100)}
    result, _ = run(make_executor(), prompt)
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"total": [6]}
    assert calls[-1] == ("SumKwargs", {"x": 2, "y": 3})


def test_hidden_inputs_of_other_kinds_take_the_prompt_value(make_executor, calls):
    """Item 3. ComfyUI ``get_input_data``: a hidden input is passed from the prompt like any declared one;
    only PROMPT / DYNPROMPT / EXTRA_PNGINFO / UNIQUE_ID / API keys are replaced by the executor."""
    prompt = {"1": n("CountingInt", value=10),
              "2": n("Accumulate", value=2, accumulated=["1", 0], step=3),
              "3": n("ShowInt", value=["2", 0])}
    result, _ = run(make_executor(), prompt)
    assert result.status == "success", result.error
    assert calls[-1] == ("Accumulate", {"accumulated": 10, "step": 3, "node": "2"})
    assert result.outputs["3"] == {"text": ["16"]}


def test_async_validate_inputs_is_awaited(registry, make_executor):
    """Item 4. ComfyUI ``execution.py::validate_inputs`` awaits ``VALIDATE_INPUTS`` when it is a coroutine."""
    ok = validate_prompt({"1": n("AsyncRefuses", value=1), "2": n("ShowInt", value=["1", 0])}, registry)
    assert ok.ok, ok.node_errors
    refused = validate_prompt({"1": n("AsyncRefuses", value=-1), "2": n("ShowInt", value=["1", 0])}, registry)
    assert not refused.ok
    assert refused.node_errors["1"]["errors"][0]["message"] == "negative values are refused"
    result, _ = run(make_executor(), _mix_graph(3, "AsyncLazyMix"))  # async VALIDATE_INPUTS + lazy check
    assert result.status == "success", result.error


def test_async_check_lazy_status_inside_the_async_phase(make_executor):
    """Item 4: an async ``check_lazy_status`` called while the run's event loop is running (an async
    node ran first) is awaited too."""
    prompt = _mix_graph(1, "AsyncLazyMix")
    prompt["1"] = n("AsyncSleep", value=["0", 0], seconds=0.0)
    prompt["0"] = n("IntConstant", value=4)
    result, _ = run(make_executor(), prompt)
    assert result.status == "success", result.error
    assert result.outputs["4"] == {"text": ["9"]}


def test_execution_cached_lists_every_cached_node(make_executor):
    """Item 5. ComfyUI ``execution.py::PromptExecutor.execute`` sends ``execution_cached`` with every node
    of the prompt whose output is cached, ancestors of cached nodes included."""
    executor = make_executor()
    prompt = {"1": n("CountingInt", value=1), "2": n("CountingInt", value=2),
              "3": n("SumKwargs", base=0, x=["1", 0], y=["2", 0])}
    run(executor, prompt)
    _, events = run(executor, prompt)
    assert events.of("execution_cached")[0]["nodes"] == ["1", "2", "3"]
    changed = {**prompt, "3": n("SumKwargs", base=5, x=["1", 0], y=["2", 0])}
    _, events = run(executor, changed)
    assert events.of("execution_cached")[0]["nodes"] == ["1", "2"]


def test_error_inside_an_expansion_is_reported_on_the_expanding_node(make_executor):
    """Item 6. ComfyUI ``execution.py::execute`` reports ``DynamicPrompt.get_real_node_id`` (the submitted
    node an expansion descends from), with that node's class type."""
    prompt = {"5": n("ExpandToFailure", value=3), "6": n("ShowInt", value=["5", 0])}
    result, events = run(make_executor(), prompt)
    assert result.status == "error"
    error = events.of("execution_error")[0]
    assert error["node_id"] == "5" and error["node_type"] == "ExpandToFailure"
    assert "inner node failed on 3" in error["exception_message"]


def test_wildcard_types_accept_any_link(registry, make_executor):
    """Item 7. ComfyUI ``comfy_execution/validation.py::validate_node_input``: ``not received != declared``
    first, so an ``AlwaysEqualProxy("*")`` input takes an INT link (it is not a COMBO)."""
    prompt = {"1": n("CountingInt", value=7), "2": n("ShowAny", anything=["1", 0])}
    assert validate_prompt(prompt, registry).ok
    result, _ = run(make_executor(), prompt)
    assert result.outputs["2"] == {"text": ["7"]}
    info = registry.get("ShowAny").object_info()
    assert info["input"]["required"]["anything"][0] == "*" and info["output"] == ["*"]


def test_unusual_declared_types_validate_like_comfyui(registry):
    """Item 7: a dict-typed input (``({},)``) loads and, as in ``validate_node_input``, accepts no link of a
    string type; a ``"{}"``-typed input takes a ``"{}"`` output; constants of non-widget types pass."""
    good = {"1": n("BracesOut"), "2": n("OddTypes", thing="x", braces=["1", 0]), "3": n("ShowAny", anything=["2", 0])}
    assert validate_prompt(good, registry).ok
    bad = {"1": n("BracesOut"), "2": n("OddTypes", thing=["1", 0], braces=["1", 0]),
           "3": n("ShowAny", anything=["2", 0])}
    checked = validate_prompt(bad, registry)
    assert not checked.ok
    assert checked.node_errors["2"]["errors"][0]["type"] == "return_type_mismatch"


def test_undeclared_link_to_a_missing_node_is_a_validation_error(registry):
    """Item 2's other side: an undeclared link runs too, so its source must exist (not a crash at run time)."""
    checked = validate_prompt({"1": n("SumKwargs", base=1, x=["99", 0])}, registry)
    assert not checked.ok
    assert checked.node_errors["1"]["errors"][0]["type"] == "bad_linked_input"
