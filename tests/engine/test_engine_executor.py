"""Executor rules, driven by the stub pack: ran / cached, lazy, lists, expansion, async, interrupts,
failures, caches."""

from __future__ import annotations

import threading
import time

import pytest
from engine_helpers import n, run

POLICIES = ["none", "run", "lru:100", "ram:1", "vram:1"]


def chain(value: int = 1) -> dict:
    return {"1": n("StubInt", value=value), "2": n("StubAdd", a=["1", 0], b=2), "3": n("StubSink", value=["2", 0])}


def test_chain_runs_in_order_and_shows_ui(make_executor):
    result, events = run(make_executor(), chain(4))
    assert result.status == "success"
    assert result.executed == ["1", "2", "3"]
    assert result.outputs == {"3": {"values": [6]}}
    assert [d["node"] for d in events.of("executing")] == ["1", "2", "3"]
    assert events.events[0][0] == "execution_start" and events.events[-1][0] == "execution_success"
    assert set(result.node_times) == {"1", "2", "3"}


def test_only_ancestors_of_requested_outputs_run(make_executor):
    prompt = {**chain(), "9": n("StubFail", value=["1", 0], message="x"), "8": n("StubSink", value=["9", 0])}
    result, _ = run(make_executor(), prompt, targets=["3"])
    assert result.status == "success"
    assert "9" not in result.executed and "8" not in result.executed


@pytest.mark.parametrize("policy", POLICIES)
def test_rerun_ran_or_cached_under_each_policy(make_executor, policy):
    executor = make_executor(policy)
    first, _ = run(executor, chain())
    second, events = run(executor, chain())
    assert first.executed == ["1", "2", "3"]
    if policy in ("none", "run"):
        assert second.executed == ["1", "2", "3"] and second.cached == []
    else:
        assert second.executed == [] and second.cached == ["3"]
        # every cached node of the prompt is listed, as ComfyUI does (issue #14 item 5); only 3 was read
        assert events.of("execution_cached")[0]["nodes"] == ["1", "2", "3"]
        assert events.of("executed")[0]["output"] == {"values": [3]}  # cached UI re-sent
    assert second.outputs == {"3": {"values": [3]}}


@pytest.mark.parametrize("policy", POLICIES)
def test_identical_subgraphs_share_within_a_job_unless_policy_none(make_executor, policy):
    prompt = {**chain(), "11": n("StubInt", value=1), "12": n("StubAdd", a=["11", 0], b=2),
              "13": n("StubSink", value=["12", 0])}
    result, _ = run(make_executor(policy), prompt)
    ran = set(result.executed)
    if policy == "none":
        assert ran == {"1", "2", "3", "11", "12", "13"}
    else:  # one of the two identical chains is served from the other's results
        assert len(ran) == 3 and len(result.cached) == 3
    assert result.outputs["3"] == result.outputs["13"] == {"values": [3]}


def test_changing_the_seed_reruns_only_its_dependents(make_executor):
    executor = make_executor()

    def graph(seed):
        return {"1": n("StubInt", value=10), "2": n("StubAdd", a=["1", 0], b=1),
                "3": n("StubInt", value=seed), "4": n("StubPair", a=["2", 0], b=["3", 0]),
                "5": n("StubSink", value=["4", 0]), "6": n("StubSink", value=["2", 0])}

    run(executor, graph(1))
    result, events = run(executor, graph(2))
    assert sorted(result.executed) == ["3", "4", "5"]
    assert events.of("execution_cached")[0]["nodes"] == ["1", "2", "6"]  # 1 too: cached, not read
    assert result.outputs["5"] == {"values": [1102]}


def test_lazy_branch_not_taken_is_not_executed(make_executor):
    prompt = {"1": n("StubInt", value=7), "2": n("StubFail", value=["1", 0], message="x"),
              "3": n("StubLazySwitch", use_a=True, a=["1", 0], b=["2", 0]), "4": n("StubSink", value=["3", 0])}
    result, _ = run(make_executor(), prompt)
    assert result.status == "success" and "2" not in result.executed
    assert result.outputs["4"] == {"values": [7]}
    prompt["3"]["inputs"]["use_a"] = False
    result, _ = run(make_executor(), prompt)
    assert result.status == "error" and result.error["node_id"] == "2"


def test_list_outputs_fan_out_and_shorter_lists_repeat_their_last_item(make_executor):
    prompt = {"1": n("StubListMaker", count=3, start=0), "2": n("StubListMaker", count=2, start=10),
              "3": n("StubPair", a=["1", 0], b=["2", 0]), "4": n("StubSink", value=["3", 0]),
              "5": n("StubListSum", items=["1", 0]), "6": n("StubSink", value=["5", 1])}
    result, _ = run(make_executor(), prompt)
    assert result.outputs["4"] == {"values": [10, 111, 211]}  # b: 10, 11, then 11 again
    assert result.outputs["6"] == {"values": [3]}  # the list node saw all 3 items at once


def test_empty_list_runs_dependents_zero_times(make_executor):
    prompt = {"1": n("StubListMaker", count=0, start=0), "2": n("StubAdd", a=["1", 0], b=1),
              "3": n("StubSink", value=["2", 0])}
    result, _ = run(make_executor(), prompt)
    assert result.status == "success" and "3" not in result.outputs


def test_expansion_loop_with_deterministic_ids_and_caching(make_executor):
    executor = make_executor()
    prompt = {"1": n("StubInt", value=10), "2": n("StubCountdown", value=["1", 0], n=4),
              "3": n("StubSink", value=["2", 0])}
    result, events = run(executor, prompt)
    assert result.status == "success" and result.outputs["3"] == {"values": [14]}
    assert "2.0.add" in result.executed and "2.0.next.0.next.0.add" in result.executed
    shown = {d["node"]: d["display_node"] for d in events.of("executing")}
    assert shown["2.0.next.0.add"] == "2"
    again, _ = run(executor, prompt)
    assert again.executed == [] and again.cached == ["3"]
    deeper = {**prompt, "2": n("StubCountdown", value=["1", 0], n=5)}
    third, _ = run(executor, deeper)  # the shared tail of the unrolled loop is reused
    assert third.outputs["3"] == {"values": [15]} and third.cached


def test_async_nodes_overlap(make_executor):
    prompt = {"1": n("StubInt", value=1)}
    for i in range(4):
        prompt[f"s{i}"] = n("StubSleep", value=["1", 0], seconds=0.3)
        prompt[f"o{i}"] = n("StubSink", value=[f"s{i}", 0])
    started = time.perf_counter()
    result, _ = run(make_executor(), prompt)
    elapsed = time.perf_counter() - started
    assert result.status == "success" and len(result.outputs) == 4
    assert elapsed < 0.9, f"4 x 0.3 s async sleeps took {elapsed:.2f} s: they did not overlap"


def test_interrupt_inside_a_long_node(make_executor):
    executor = make_executor()
    prompt = {"1": n("StubInt", value=1), "2": n("StubSlow", value=["1", 0], steps=200, delay=0.01),
              "3": n("StubSink", value=["2", 0])}
    stop = threading.Event()
    threading.Timer(0.15, stop.set).start()
    started = time.perf_counter()
    result, events = run(executor, prompt, interrupted=stop)
    assert result.status == "interrupted" and time.perf_counter() - started < 1.5
    data = events.of("execution_interrupted")[0]
    assert data["node_id"] == "2" and data["node_type"] == "StubSlow" and data["executed"] == ["1"]
    assert 0 < len(events.of("progress")) < 200
    again, _ = run(executor, prompt)  # the process and caches are fine: "1" comes from the cache
    assert again.status == "success" and again.cached == ["1"]


def test_progress_carries_named_numbers(make_executor):
    """Trainer nodes report loss through progress(..., loss=x); the editor's loss widget reads it."""
    prompt = {"1": n("StubInt", value=1), "2": n("StubSlow", value=["1", 0], steps=4, delay=0.0),
              "3": n("StubSink", value=["2", 0])}
    result, events = run(make_executor(), prompt)
    assert result.status == "success"
    progress = events.of("progress")
    assert [p["value"] for p in progress] == [1, 2, 3, 4]
    assert [p["loss"] for p in progress] == [1.0, 0.5, 1.0 / 3, 0.25]
    assert all(p["node"] == "2" and p["max"] == 4 for p in progress)


def test_interrupt_between_nodes(make_executor):
    stop = threading.Event()
    stop.set()
    result, events = run(make_executor(), chain(), interrupted=stop)
    assert result.status == "interrupted" and result.executed == []


def test_failure_reports_node_and_keeps_caches_consistent(make_executor):
    executor = make_executor()
    prompt = {"1": n("StubInt", value=5), "2": n("StubFail", value=["1", 0], message="bad thing"),
              "3": n("StubSink", value=["2", 0])}
    result, events = run(executor, prompt)
    assert result.status == "error"
    error = events.of("execution_error")[0]
    assert error["node_id"] == "2" and error["node_type"] == "StubFail"
    assert error["exception_type"] == "RuntimeError" and error["exception_message"] == "bad thing"
    assert any("bad thing" in line for line in error["traceback"])
    assert error["current_inputs"] == {"value": ["5"], "message": ["'bad thing'"]}
    assert result.messages[-1][0] == "execution_error"
    fixed = {**prompt, "2": n("StubAdd", a=["1", 0], b=1)}
    after, _ = run(executor, fixed)
    assert after.status == "success" and after.cached == ["1"] and after.outputs["3"] == {"values": [6]}


def test_cuda_oom_frees_the_output_cache_and_says_so(make_executor):
    executor = make_executor()
    run(executor, chain())
    assert executor.caches.stats()["entries"] == 3
    result, _ = run(executor, {"1": n("StubInt", value=1), "2": n("StubOOM", value=["1", 0]),
                               "3": n("StubSink", value=["2", 0])})
    assert result.status == "error" and "output cache was freed" in result.error["exception_message"]
    assert executor.caches.stats()["entries"] == 0


def test_not_idempotent_nodes_are_not_shared_within_a_job(make_executor):
    prompt = {"1": n("StubRandom", scale=10**9), "2": n("StubRandom", scale=10**9),
              "3": n("StubSink", value=["1", 0]), "4": n("StubSink", value=["2", 0])}
    result, _ = run(make_executor("run"), prompt)
    assert {"1", "2"} <= set(result.executed)


def test_fingerprint_hook_controls_reuse(make_executor, tmp_path):
    executor = make_executor()
    path = tmp_path / "note.txt"
    path.write_text("one")
    prompt = {"1": n("StubFileStamp", path=str(path)), "2": n("StubSink", value=["1", 0])}
    assert run(executor, prompt)[0].executed == ["1", "2"]
    assert run(executor, prompt)[0].executed == []
    path.write_text("two")
    changed, _ = run(executor, prompt)
    assert changed.executed == ["1", "2"] and changed.outputs["2"] == {"values": ["two"]}
    path.unlink()  # NaN fingerprint: always re-run
    assert run(executor, prompt)[0].executed == ["1", "2"]
    assert run(executor, prompt)[0].executed == ["1", "2"]


def test_execution_blocker_blocks_downstream(make_executor):
    prompt = {"1": n("StubInt", value=1), "2": n("StubGate", value=["1", 0], open=False, message="closed"),
              "3": n("StubSink", value=["2", 0])}
    result, events = run(make_executor(), prompt)
    assert result.status == "success" and "3" not in result.outputs
    assert events.of("execution_error")[0]["exception_type"] == "ExecutionBlocked"
    prompt["2"]["inputs"]["message"] = ""
    silent, events = run(make_executor(), prompt)
    assert silent.status == "success" and not events.of("execution_error") and "3" not in silent.outputs


def test_hidden_inputs_reach_declarative_nodes(make_executor):
    prompt = {"7": n("StubWhoAmI"), "8": n("StubSink", value=["7", 0])}
    result, _ = run(make_executor(), prompt)
    assert result.outputs["8"] == {"values": ["7/2"]}


def test_policy_switch_at_runtime(make_executor):
    executor = make_executor("lru:100")
    run(executor, chain())
    executor.caches.set_policy("lru:1")
    assert executor.caches.stats()["entries"] == 1
    executor.caches.set_policy("none")
    assert executor.caches.stats()["entries"] == 0
    assert run(executor, chain())[0].executed == ["1", "2", "3"]
    with pytest.raises(ValueError, match="bad cache policy"):
        executor.caches.set_policy("lru:x")


def test_output_node_writes_under_output_dir(make_executor, tmp_path):
    prompt = {"1": n("StubInt", value=3), "2": n("StubSave", value=["1", 0], prefix="t")}
    result, _ = run(make_executor(), prompt)
    assert (tmp_path / "output" / "t_3.txt").read_text() == "3"
    assert result.outputs["2"]["images"][0]["filename"] == "t_3.txt"


def test_invalid_graph_never_starts(make_executor):
    result, events = run(make_executor(), {"1": n("StubSink", value=["9", 0])})
    assert result.status == "error" and result.error["node_errors"]["1"]["errors"][0]["type"] == "bad_linked_input"
    assert events.events == []


def test_long_chain_is_not_recursive(make_executor):
    prompt = {"0": n("StubInt", value=0)}
    for i in range(1, 3001):
        prompt[str(i)] = n("StubAdd", a=[str(i - 1), 0], b=1)
    prompt["sink"] = n("StubSink", value=["3000", 0])
    result, _ = run(make_executor(), prompt)
    assert result.outputs["sink"] == {"values": [3000]}


def test_file_list_combos_validate_against_the_executors_paths(tmp_path):
    """A combo listing model files is validated under the executor's Paths, not the process default."""
    from fewstep.app.api import Combo, Node, NodeOutput, Output, Paths, Schema, current_paths
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import Registry

    class PickCheckpoint(Node):
        @classmethod
        def define_schema(cls):
            return Schema(node_id="PickCheckpoint", is_output_node=True, outputs=[Output("name", "STRING")],
                          inputs=[Combo("ckpt_name", lambda: current_paths().list_models("checkpoints"))])

        @classmethod
        def execute(cls, ckpt_name):
            return NodeOutput(ckpt_name, ui={"name": [ckpt_name]})

    registry = Registry()
    registry.register_pack("files", [PickCheckpoint])
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "mine.safetensors").write_bytes(b"x")
    executor = Executor(registry, CacheSet("none"), Paths(model_roots=(tmp_path / "models",)))
    result = executor.execute({"1": n("PickCheckpoint", ckpt_name="mine.safetensors")}, prompt_id="p")
    assert result.status == "success", result.error
    assert result.outputs["1"] == {"name": ["mine.safetensors"]}
