"""``fewstep bench executor``: the engine's own overhead per node.

Two graphs of trivial integer nodes: a chain of 1,000 nodes (constant -> 998 increments -> sink) and a
100-wide fan-in (100 constants -> one node with 100 inputs -> sink). Each runs cold (empty cache: every
node executes) and fully cached (an identical second run). The figure reported is wall time of
``Executor.execute`` (validation, keys, scheduling, events, cache) divided by the number of nodes that
executed (cold) or by the graph's size (cached). Goal on a 2-core CPU: <= 50 us / <= 5 us. A third
figure is the cold run's CPU time with an event listener attached (the server always listens): it adds the
per-node ``executing`` / ``progress_state`` messages, whose snapshots grow with the nodes started so far.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fewstep.app.api import Int, Link, Node, NodeOutput, Output, Schema
from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.registry import Registry

FAN_IN = 100


class BenchConst(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema("BenchConst", category="bench", inputs=[Int("value", 0)], outputs=[Output("value", "INT")])

    @classmethod
    def execute(cls, value: int) -> NodeOutput:
        return NodeOutput(value)


class BenchInc(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema("BenchInc", category="bench", inputs=[Link("x", "INT"), Int("step", 1)],
                      outputs=[Output("x", "INT")])

    @classmethod
    def execute(cls, x: int, step: int) -> NodeOutput:
        return NodeOutput(x + step)


class BenchGather(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        inputs = [Link(f"x{i}", "INT", optional=True) for i in range(FAN_IN)]
        return Schema("BenchGather", category="bench", inputs=inputs, outputs=[Output("total", "INT")])

    @classmethod
    def execute(cls, **values: int) -> NodeOutput:
        return NodeOutput(sum(values.values()))


class BenchSink(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema("BenchSink", category="bench", inputs=[Link("value", "INT")], is_output_node=True)

    @classmethod
    def execute(cls, value: int) -> NodeOutput:
        return NodeOutput(ui={"value": [value]})


def bench_registry() -> Registry:
    registry = Registry()
    registry.register_pack("bench", [BenchConst, BenchInc, BenchGather, BenchSink], source="builtin",
                           python_module="fewstep.bench.engine")
    return registry


def chain_graph(length: int = 1000) -> dict[str, Any]:
    """constant -> (length - 2) increments -> sink."""
    graph: dict[str, Any] = {"0": {"class_type": "BenchConst", "inputs": {"value": 0}}}
    for i in range(1, length - 1):
        graph[str(i)] = {"class_type": "BenchInc", "inputs": {"x": [str(i - 1), 0], "step": 1}}
    graph["sink"] = {"class_type": "BenchSink", "inputs": {"value": [str(length - 2), 0]}}
    return graph


def fan_in_graph(width: int = FAN_IN) -> dict[str, Any]:
    """width constants -> one gather node -> sink."""
    graph: dict[str, Any] = {f"c{i}": {"class_type": "BenchConst", "inputs": {"value": i}} for i in range(width)}
    graph["gather"] = {"class_type": "BenchGather", "inputs": {f"x{i}": [f"c{i}", 0] for i in range(width)}}
    graph["sink"] = {"class_type": "BenchSink", "inputs": {"value": ["gather", 0]}}
    return graph


def _drop(event: str, data: dict[str, Any]) -> None:
    """A listener that discards events (the server's would also serialise them)."""


def _time_run(executor: Executor, graph: dict[str, Any], prompt_id: str,
              listen: bool = False) -> tuple[float, float, Any]:
    """Wall and CPU (this thread) seconds of one execution; CPU time is robust to a busy machine."""
    kwargs = {"emit": _drop} if listen else {}
    wall, cpu = time.perf_counter(), time.thread_time()
    result = executor.execute(graph, prompt_id=prompt_id, **kwargs)
    return time.perf_counter() - wall, time.thread_time() - cpu, result


def measure(graph: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Median per-node microseconds (wall and CPU), cold and fully cached."""
    registry = bench_registry()
    rows: dict[str, list[float]] = {"cold_wall": [], "cold_cpu": [], "cached_wall": [], "cached_cpu": [],
                                    "cold_listened_cpu": []}
    for r in range(repeats):
        executor = Executor(registry, CacheSet("lru:100000"))
        wall, cpu, result = _time_run(executor, graph, f"cold-{r}")
        if result.status != "success":
            raise RuntimeError(f"benchmark graph failed: {result.error}")
        rows["cold_wall"].append(wall / len(result.executed))
        rows["cold_cpu"].append(cpu / len(result.executed))
        wall, cpu, again = _time_run(executor, graph, f"cached-{r}")
        if again.executed:
            raise RuntimeError("the cached run executed nodes")
        rows["cached_wall"].append(wall / len(graph))
        rows["cached_cpu"].append(cpu / len(graph))
        _, cpu, heard = _time_run(Executor(registry, CacheSet("lru:100000")), graph, f"listened-{r}", listen=True)
        rows["cold_listened_cpu"].append(cpu / len(heard.executed))
    return {"nodes": len(graph), "repeats": repeats,
            **{f"{k}_us": statistics.median(v) * 1e6 for k, v in rows.items()}}


def run_bench(repeats: int = 7, out: Path | None = None, write: Callable[[str], Any] | None = None) -> dict:
    """Run both graphs, print a table (``write``: default the current ``sys.stdout.write``), write JSON to ``out``."""
    write = write or sys.stdout.write
    results = {"chain_1000": measure(chain_graph(), repeats), "fan_in_100": measure(fan_in_graph(), repeats)}
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
              "machine": platform.machine(), "processor": platform.processor(), "results": results,
              "goal_us": {"cold": 50, "cached": 5}}
    write(f"{'graph':<12} {'nodes':>6} {'cold us/node (wall/cpu)':>24} {'cached us/node (wall/cpu)':>26} "
          f"{'cold+events cpu':>16}\n")
    for name, row in results.items():
        cold = f"{row['cold_wall_us']:.1f} / {row['cold_cpu_us']:.1f}"
        cached = f"{row['cached_wall_us']:.1f} / {row['cached_cpu_us']:.1f}"
        write(f"{name:<12} {row['nodes']:>6} {cold:>24} {cached:>26} {row['cold_listened_cpu_us']:>16.1f}\n")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        write(f"wrote {out}\n")
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fewstep bench executor [--repeats 7] [--json bench-executor.json]``."""
    parser = argparse.ArgumentParser(prog="fewstep bench executor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path("bench-executor.json"))
    options = parser.parse_args(argv)
    run_bench(options.repeats, options.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
