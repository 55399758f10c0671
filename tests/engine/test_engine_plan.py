"""Memoised validation and keys (fewstep/app/plan.py), progress_state snapshots, and outputs released under
policy ``none``."""

from __future__ import annotations

import json
import weakref

import pytest
from engine_helpers import n, run

import fewstep.app.executor
from fewstep.app.api import Combo, Int, Link, Node, NodeOutput, Output, Schema, String
from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.plan import signature
from fewstep.app.registry import Registry
from fewstep.app.validation import validate_prompt


def two_chains(b: int = 2) -> dict:
    return {"1": n("StubInt", value=1), "2": n("StubAdd", a=["1", 0], b=b), "3": n("StubSink", value=["2", 0]),
            "11": n("StubInt", value=5), "12": n("StubAdd", a=["11", 0], b=1), "13": n("StubSink", value=["12", 0])}


@pytest.fixture
def validations(monkeypatch):
    """Counts full validations run by the executor."""
    calls = []
    real = fewstep.app.executor.validate_prompt

    def counting(prompt, registry, targets=None):
        calls.append(1)
        return real(prompt, registry, targets)

    monkeypatch.setattr(fewstep.app.executor, "validate_prompt", counting)
    return calls


# -- memoised validation and keys -----------------------------------------------------------------

def test_identical_prompt_is_validated_once(make_executor, validations):
    executor = make_executor()
    run(executor, two_chains())
    again, _ = run(executor, two_chains())  # an equal prompt built anew: found by content
    assert len(validations) == 1
    assert again.executed == [] and sorted(again.cached) == ["13", "3"]


def test_changed_constant_reruns_exactly_its_dependents(make_executor, validations):
    executor = make_executor()
    prompt = two_chains()
    run(executor, prompt)
    run(executor, prompt)
    prompt["2"]["inputs"]["b"] = 3  # the same dict object, changed in place: must not hit the memo
    changed, _ = run(executor, prompt)
    assert changed.executed == ["2", "3"] and changed.outputs["3"] == {"values": [4]}
    assert sorted(changed.cached) == ["1", "13"]
    prompt["2"]["inputs"]["b"] = 2.0  # equal to 2 but a float: a different prompt (FLOAT/INT typing)
    run(executor, prompt)
    assert len(validations) == 3


def test_prompt_holding_an_object_is_validated_every_run(make_executor, validations):
    class Text(str):
        pass

    executor = make_executor()
    prompt = {"1": n("StubWidgets", mode="fast", ratio=0.5, flag=False, text=Text("x")), "2": n("StubSink", value=["1", 0])}
    run(executor, prompt)
    again, _ = run(executor, prompt)
    assert again.status == "success" and len(validations) == 2  # marshal refuses a str subclass


def test_memoised_keys_equal_fresh_keys(make_executor, registry):
    executor = make_executor()
    run(executor, two_chains())
    run(executor, two_chains())  # keys now come from the plan
    executor.caches.free_outputs()
    warm, _ = run(executor, two_chains())  # stores results under memoised keys
    assert sorted(warm.executed) == ["1", "11", "12", "13", "2", "3"]
    fresh = Executor(registry, executor.caches, executor.paths)  # no plan: computes every key itself
    result, _ = run(fresh, two_chains())
    assert result.executed == [] and sorted(result.cached) == ["13", "3"]


def test_fingerprinted_node_and_descendants_rekeyed_on_memo_hit(make_executor, tmp_path, validations):
    executor = make_executor()
    path = tmp_path / "note.txt"
    path.write_text("one")
    prompt = {"1": n("StubFileStamp", path=str(path)), "2": n("StubAdd", a=["3", 0], b=1),
              "3": n("StubInt", value=1), "4": n("StubSink", value=["1", 0]), "5": n("StubSink", value=["2", 0])}
    run(executor, prompt)
    assert run(executor, prompt)[0].executed == []
    path.write_text("two")
    changed, _ = run(executor, prompt)
    assert changed.executed == ["1", "4"] and changed.outputs["4"] == {"values": ["two"]}
    assert len(validations) == 1


def test_registry_change_invalidates_memoised_validation(registry, validations):
    local = Registry()
    executor = Executor(local, CacheSet("lru:100"))
    prompt = {"1": n("Const", value=3), "2": n("Show", value=["1", 0])}
    local.register_pack("first", [Const, Show])
    assert run(executor, prompt)[0].status == "success"
    run(executor, prompt)
    assert len(validations) == 1
    local.register_pack("second", [Blob])
    assert run(executor, prompt)[0].status == "success"
    assert len(validations) == 2
    executor.registry = registry  # a registry without these classes: the plan must not be used
    result, _ = run(executor, prompt)
    assert result.status == "error" and result.error["node_errors"]["1"]["errors"][0]["type"] == "missing_node_type"


def _file_list_setup(tmp_path):
    """A registry with the file-list node, an executor on it, and a prompt choosing a.bin (which exists)."""
    (tmp_path / "a.bin").write_text("x")
    FileChoice.folder = tmp_path
    local = Registry()
    local.register_pack("files", [FileChoice, Show])
    prompt = {"1": n("FileChoice", name="a.bin"), "2": n("Show", value=["1", 0])}
    return local, Executor(local, CacheSet("lru:100")), prompt


def test_file_list_combo_revalidated_on_memo_hit(tmp_path, validations):
    local, executor, prompt = _file_list_setup(tmp_path)
    assert run(executor, prompt)[0].status == "success"
    (tmp_path / "a.bin").unlink()
    result, _ = run(executor, prompt)
    assert result.status == "error"
    assert result.error["node_errors"]["1"]["errors"][0]["type"] == "value_not_in_list"


def test_custom_validator_runs_on_every_submission(validations):
    local = Registry()
    local.register_pack("checked", [Checked, Show])
    executor = Executor(local, CacheSet("lru:100"))
    Checked.seen = []
    prompt = {"1": n("Checked", value=4), "2": n("Show", value=["1", 0])}
    run(executor, prompt)
    again, _ = run(executor, prompt)
    assert Checked.seen == [4, 4] and len(validations) == 1 and again.executed == []
    Checked.allowed = False  # the validator now refuses the same prompt
    try:
        refused, _ = run(executor, prompt)
    finally:
        Checked.allowed = True
    assert refused.status == "error"
    assert refused.error["node_errors"]["1"]["errors"][0]["type"] == "custom_validation_failed"



# -- plans remembered from the server's validation (Executor.remember) ------------------------------

def _queued(prompt: dict) -> dict:
    """The prompt as the worker gets it back from the SQLite queue (JSON text)."""
    return json.loads(json.dumps(prompt))


def test_remembered_plan_runs_the_queued_prompt_without_validating_again(make_executor, registry, validations):
    executor = make_executor()
    prompt = two_chains()
    checked = validate_prompt(prompt, registry)          # what POST /prompt did
    executor.remember(prompt, list(checked.outputs), checked, registry)
    result, _ = run(executor, _queued(prompt), targets=list(checked.outputs))
    assert result.status == "success" and sorted(result.executed) == ["1", "11", "12", "13", "2", "3"]
    assert result.outputs["3"] == {"values": [3]} and validations == []


def test_remember_ignores_failed_validations_and_other_registries(make_executor, registry, validations):
    executor = make_executor()
    prompt = two_chains()
    checked = validate_prompt(prompt, registry)
    executor.remember(prompt, list(checked.outputs), checked, Registry())   # validated against another registry
    broken = {"1": n("NoSuchNode")}
    refused = validate_prompt(broken, registry)
    assert not refused.ok
    executor.remember(broken, None, refused, registry)
    assert run(executor, prompt, targets=list(checked.outputs))[0].status == "success"
    assert run(executor, broken)[0].status == "error"
    assert len(validations) == 2


def test_remember_keeps_the_plan_earlier_runs_filled(make_executor, registry):
    executor = make_executor()
    prompt = two_chains()
    targets = list(validate_prompt(prompt, registry).outputs)
    run(executor, prompt, targets=targets)
    plan = executor.plans.get(signature(prompt, targets), registry)
    assert plan is not None and plan.keys                  # the run recorded the nodes' stable keys
    executor.remember(prompt, targets, validate_prompt(prompt, registry), registry)
    assert executor.plans.get(signature(prompt, targets), registry) is plan


def test_remembered_plan_still_rechecks_file_lists_at_run_time(tmp_path, validations):
    local, executor, prompt = _file_list_setup(tmp_path)
    checked = validate_prompt(prompt, local)
    executor.remember(prompt, list(checked.outputs), checked, local)
    (tmp_path / "a.bin").unlink()                          # deleted while the job waited in the queue
    result, _ = run(executor, _queued(prompt), targets=list(checked.outputs))
    assert result.status == "error"
    assert result.error["node_errors"]["1"]["errors"][0]["type"] == "value_not_in_list"

# -- progress_state ---------------------------------------------------------------------------------

def test_progress_state_lists_every_started_node(make_executor):
    prompt = {"1": n("StubInt", value=1), "2": n("StubSlow", value=["1", 0], steps=3, delay=0.0),
              "3": n("StubSink", value=["2", 0])}
    result, events = run(make_executor(), prompt)
    states = events.of("progress_state")
    first = states[0]["nodes"]
    assert list(first) == ["1"] and first["1"]["state"] == "running" and (first["1"]["value"], first["1"]["max"]) == (0, 1)
    during = [s["nodes"] for s in states if s["nodes"].get("2", {}).get("value") == 2]
    assert during and during[0]["1"]["state"] == "finished" and during[0]["2"]["state"] == "running"
    assert during[0]["2"]["max"] == 3 and "3" not in during[0]  # pending nodes are left out
    last = states[-1]["nodes"]
    assert {k: (v["state"], v["value"], v["max"]) for k, v in last.items()} == {
        "1": ("finished", 1, 1), "2": ("finished", 3, 3), "3": ("finished", 1, 1)}
    assert set(last["2"]) == {"value", "max", "state", "node_id", "prompt_id", "display_node_id",
                              "parent_node_id", "real_node_id"}
    assert len(states) == 2 * 3 + 3  # start and finish of each node, and the three progress reports
    assert states[0]["nodes"] is not states[1]["nodes"] and len(states[0]["nodes"]) == 1  # snapshots


def test_progress_state_of_cached_expanded_and_failed_nodes(make_executor):
    executor = make_executor()
    prompt = {"1": n("StubInt", value=10), "2": n("StubCountdown", value=["1", 0], n=1),
              "3": n("StubSink", value=["2", 0])}
    _, events = run(executor, prompt)
    last = events.of("progress_state")[-1]["nodes"]
    assert last["2.0.add"]["parent_node_id"] == "2" and last["2.0.add"]["real_node_id"] == "2"
    assert last["2.0.add"]["display_node_id"] == "2" and last["2"]["state"] == "finished"
    _, cached = run(executor, prompt)
    assert [s["nodes"]["3"]["state"] for s in cached.of("progress_state")] == ["finished"]
    failing = {"1": n("StubInt", value=1), "2": n("StubFail", value=["1", 0], message="boom"),
               "3": n("StubSink", value=["2", 0])}
    _, failed = run(executor, failing)
    assert failed.of("progress_state")[-1]["nodes"]["2"]["state"] == "error"


# -- outputs released under policy none -------------------------------------------------------------

class Payload:
    """A weak-referenceable value standing for a large intermediate (a latent, an image)."""

    def __init__(self, value: int) -> None:
        self.value = value


class Blob(Node):
    """Makes (or passes on, plus one) a Payload and remembers a weak reference to it."""

    made: list[weakref.ref] = []

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema("Blob", inputs=[Link("prev", "PAYLOAD", optional=True)], outputs=[Output("out", "PAYLOAD")])

    @classmethod
    def execute(cls, prev: Payload | None = None) -> NodeOutput:
        payload = Payload(prev.value + 1 if prev is not None else 0)
        cls.made.append(weakref.ref(payload))
        return NodeOutput(payload)


class CountAlive(Node):
    """Reports how many Payloads made so far are still alive (held by someone)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema("CountAlive", inputs=[Link("last", "PAYLOAD")], is_output_node=True)

    @classmethod
    def execute(cls, last: Payload) -> NodeOutput:
        return NodeOutput(ui={"alive": [sum(ref() is not None for ref in Blob.made)], "last": [last.value]})


class Reach(Node):
    """Expands into a Const + Add that links to the existing node named by `source` (by id)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema("Reach", inputs=[Link("after", "INT"), String("source", "")], outputs=[Output("x", "INT")],
                      enable_expand=True)

    @classmethod
    def execute(cls, after: int, source: str) -> NodeOutput:
        graph = {"add": {"class_type": "Add", "inputs": {"a": [source, 0], "b": 100}}}
        return NodeOutput(["add", 0], expand=graph)


class Const(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema("Const", inputs=[Int("value", 0)], outputs=[Output("value", "INT")])

    @classmethod
    def execute(cls, value: int) -> NodeOutput:
        return NodeOutput(value)


class Add(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema("Add", inputs=[Link("a", "INT"), Int("b", 0)], outputs=[Output("value", "INT")])

    @classmethod
    def execute(cls, a: int, b: int) -> NodeOutput:
        return NodeOutput(a + b)


class Show(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema("Show", inputs=[Link("value", "*")], is_output_node=True)

    @classmethod
    def execute(cls, value: object) -> NodeOutput:
        return NodeOutput(ui={"values": [value]})


class Checked(Node):
    """A custom validator that records its calls and can be switched to refuse."""

    seen: list[int] = []
    allowed = True

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema("Checked", inputs=[Int("value", 0)], outputs=[Output("value", "INT")])

    @classmethod
    def validate_inputs(cls, value: int) -> bool | str:
        cls.seen.append(value)
        return True if cls.allowed else "refused"

    @classmethod
    def execute(cls, value: int) -> NodeOutput:
        return NodeOutput(value)


class FileChoice(Node):
    """A COMBO whose options are the files of a folder (read on each validation)."""

    folder = None

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema("FileChoice", inputs=[Combo("name", lambda: sorted(p.name for p in cls.folder.iterdir()))],
                      outputs=[Output("name", "STRING")])

    @classmethod
    def execute(cls, name: str) -> NodeOutput:
        return NodeOutput(name)


@pytest.fixture
def local_executor():
    registry = Registry()
    registry.register_pack("local", [Blob, CountAlive, Reach, Const, Add, Show])

    def make(policy: str) -> Executor:
        Blob.made = []
        return Executor(registry, CacheSet(policy))
    return make


def blob_chain(length: int) -> dict:
    prompt = {"0": n("Blob")}
    for i in range(1, length):
        prompt[str(i)] = n("Blob", prev=[str(i - 1), 0])
    prompt["end"] = n("CountAlive", last=[str(length - 1), 0])
    return prompt


@pytest.mark.parametrize("policy, alive", [("none", 1), ("run", 5), ("lru:100", 5)])
def test_outputs_released_once_consumers_ran_under_policy_none(local_executor, policy, alive):
    result, _ = run(local_executor(policy), blob_chain(5))
    assert result.status == "success" and result.outputs["end"]["last"] == [4]
    assert result.outputs["end"]["alive"] == [alive]  # none: only the input of the node now running


def test_output_with_two_consumers_is_kept_until_both_ran(local_executor):
    prompt = {"0": n("Blob"), "1": n("Blob", prev=["0", 0]), "2": n("Blob", prev=["1", 0]),
              "late": n("CountAlive", last=["0", 0]), "end": n("CountAlive", last=["2", 0])}
    result, _ = run(local_executor("none"), prompt, targets=["end", "late"])
    assert result.status == "success"
    assert result.outputs["late"]["last"] == [0] and result.outputs["end"]["last"] == [2]


def test_expansion_linking_to_a_released_node_reruns_it(local_executor):
    prompt = {"a": n("Const", value=5), "b": n("Add", a=["a", 0], b=1), "c": n("Reach", after=["b", 0], source="a"),
              "show": n("Show", value=["c", 0])}
    result, _ = run(local_executor("none"), prompt)
    assert result.status == "success" and result.outputs["show"] == {"values": [105]}
    assert result.executed.count("a") == 2  # released after b ran; run again for the expansion
    kept, _ = run(local_executor("lru:100"), prompt)
    assert kept.outputs["show"] == {"values": [105]} and kept.executed.count("a") == 1


def test_lazy_and_expansion_graphs_run_under_policy_none(make_executor):
    prompt = {"1": n("StubInt", value=7), "2": n("StubFail", value=["1", 0], message="x"),
              "3": n("StubLazySwitch", use_a=True, a=["1", 0], b=["2", 0]), "4": n("StubSink", value=["3", 0]),
              "5": n("StubCountdown", value=["1", 0], n=3), "6": n("StubSink", value=["5", 0])}
    result, _ = run(make_executor("none"), prompt)
    assert result.status == "success" and "2" not in result.executed
    assert result.outputs["4"] == {"values": [7]} and result.outputs["6"] == {"values": [10]}
