"""Stub node pack driving the engine tests: trivial declarative nodes, one per engine rule."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from fewstep.app.api import (
    Boolean,
    Combo,
    ExecutionBlocker,
    Float,
    Hidden,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    Schema,
    String,
    current_context,
    current_paths,
)


def _schema(node_id: str, inputs=(), outputs=(), **kw) -> Schema:
    return Schema(node_id=node_id, category="stub", inputs=tuple(inputs), outputs=tuple(outputs), **kw)


class StubInt(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubInt", [Int("value", 0, min=-1000, max=1000)], [Output("value", "INT")])

    @classmethod
    def execute(cls, value):
        return NodeOutput(value)


class StubAdd(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubAdd", [Link("a", "INT"), Int("b", 1)], [Output("sum", "INT")])

    @classmethod
    def execute(cls, a, b):
        return NodeOutput(a + b)


class StubPair(Node):
    """a * 100 + b: shows which list items were paired."""

    @classmethod
    def define_schema(cls):
        return _schema("StubPair", [Link("a", "INT"), Link("b", "INT")], [Output("pair", "INT")])

    @classmethod
    def execute(cls, a, b):
        return NodeOutput(a * 100 + b)


class StubSink(Node):
    """Output node: shows its value in the UI."""

    @classmethod
    def define_schema(cls):
        return _schema("StubSink", [Link("value", "*")], [], is_output_node=True)

    @classmethod
    def execute(cls, value):
        return NodeOutput(ui={"values": [value]})


class StubSave(Node):
    """Output node writing a text file under the output directory."""

    @classmethod
    def define_schema(cls):
        return _schema("StubSave", [Link("value", "*"), String("prefix", "stub")], [], is_output_node=True)

    @classmethod
    def execute(cls, value, prefix):
        out = current_paths().output_dir
        out.mkdir(parents=True, exist_ok=True)
        path = Path(out) / f"{prefix}_{value}.txt"
        path.write_text(str(value))
        return NodeOutput(ui={"images": [{"filename": path.name, "subfolder": "", "type": "output"}]})


class StubFail(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubFail", [Link("value", "*"), String("message", "boom")], [Output("value", "INT")])

    @classmethod
    def execute(cls, value, message):
        raise RuntimeError(message)


class OutOfMemoryError(RuntimeError):
    """Same name as torch.cuda.OutOfMemoryError (the executor recognises it by name)."""


class StubOOM(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubOOM", [Link("value", "*")], [Output("value", "INT")])

    @classmethod
    def execute(cls, value):
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class StubSlow(Node):
    """Loops `steps` times, reporting progress (where interrupts are noticed)."""

    @classmethod
    def define_schema(cls):
        return _schema("StubSlow", [Link("value", "INT"), Int("steps", 50), Float("delay", 0.01)],
                       [Output("value", "INT")])

    @classmethod
    def execute(cls, value, steps, delay):
        context = current_context()
        for i in range(steps):
            time.sleep(delay)
            context.progress(i + 1, steps, loss=1.0 / (i + 1))
        return NodeOutput(value)


class StubLazySwitch(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubLazySwitch", [Boolean("use_a", True), Link("a", "INT", lazy=True),
                                          Link("b", "INT", lazy=True)], [Output("value", "INT")])

    @classmethod
    def check_lazy_status(cls, use_a, a=None, b=None):
        return ["a"] if use_a else ["b"]

    @classmethod
    def execute(cls, use_a, a=None, b=None):
        return NodeOutput(a if use_a else b)


class StubListMaker(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubListMaker", [Int("count", 3, min=0, max=100), Int("start", 0)],
                       [Output("items", "INT", is_list=True)])

    @classmethod
    def execute(cls, count, start):
        return NodeOutput(list(range(start, start + count)))


class StubListSum(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubListSum", [Link("items", "INT")], [Output("total", "INT"), Output("n", "INT")],
                       is_input_list=True)

    @classmethod
    def execute(cls, items):
        return NodeOutput(sum(items), len(items))


class StubRandom(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubRandom", [Int("scale", 1000)], [Output("value", "INT")], not_idempotent=True)

    @classmethod
    def execute(cls, scale):
        return NodeOutput(random.randrange(scale))


class StubFileStamp(Node):
    """Fingerprint = the file's text: editing the file re-runs the node; NaN when the file is absent."""

    @classmethod
    def define_schema(cls):
        return _schema("StubFileStamp", [String("path", "")], [Output("text", "STRING")])

    @classmethod
    def fingerprint_inputs(cls, path):
        p = Path(path)
        return p.read_text() if p.is_file() else float("nan")

    @classmethod
    def execute(cls, path):
        p = Path(path)
        return NodeOutput(p.read_text() if p.is_file() else "")


class StubEven(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubEven", [Int("value", 0, min=0, max=10)], [Output("value", "INT")])

    @classmethod
    def validate_inputs(cls, value):
        if value is not None and value % 2:
            return f"value must be even, got {value}"
        return True

    @classmethod
    def execute(cls, value):
        return NodeOutput(value)


class StubWidgets(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubWidgets", [Combo("mode", ["fast", "slow"]), Float("ratio", 0.5, min=0.0, max=1.0),
                                       Boolean("flag", False), String("text", "")], [Output("out", "STRING")])

    @classmethod
    def execute(cls, mode, ratio, flag, text):
        return NodeOutput(f"{mode}:{ratio}:{flag}:{text}")


class StubMakeA(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubMakeA", [], [Output("a", "TYPE_A")])

    @classmethod
    def execute(cls):
        return NodeOutput("a")


class StubNeedsB(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubNeedsB", [Link("b", "TYPE_B")], [], is_output_node=True)

    @classmethod
    def execute(cls, b):
        return NodeOutput(ui={"values": [b]})


class StubCountdown(Node):
    """value + n through n nested expansions (a loop by tail recursion)."""

    @classmethod
    def define_schema(cls):
        return _schema("StubCountdown", [Link("value", "INT"), Int("n", 3, min=0, max=1000)],
                       [Output("value", "INT")], enable_expand=True)

    @classmethod
    def execute(cls, value, n):
        if n <= 0:
            return NodeOutput(value)
        graph = {
            "add": {"class_type": "StubAdd", "inputs": {"a": value, "b": 1}},
            "next": {"class_type": "StubCountdown", "inputs": {"value": ["add", 0], "n": n - 1}},
        }
        return NodeOutput(["next", 0], expand=graph)


class StubSleep(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubSleep", [Link("value", "INT"), Float("seconds", 0.2)], [Output("value", "INT")])

    @classmethod
    async def execute(cls, value, seconds):
        await asyncio.sleep(seconds)
        return NodeOutput(value)


class StubGate(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubGate", [Link("value", "INT"), Boolean("open", True), String("message", "")],
                       [Output("value", "INT")])

    @classmethod
    def execute(cls, value, open, message):
        if open:
            return NodeOutput(value)
        return NodeOutput(ExecutionBlocker(message or None))


class StubWhoAmI(Node):
    @classmethod
    def define_schema(cls):
        return _schema("StubWhoAmI", [], [Output("id", "STRING")], hidden=(Hidden.UNIQUE_ID, Hidden.PROMPT))

    @classmethod
    def execute(cls, unique_id, prompt):
        return NodeOutput(f"{unique_id}/{len(prompt)}")


class StubCheckpoint(Node):
    """Lists checkpoint file names of the current models folders (a COMBO), outputs the file's path."""

    @classmethod
    def define_schema(cls):
        names = Combo("ckpt_name", lambda: current_paths().list_models("checkpoints", (".safetensors",)))
        return _schema("StubCheckpoint", [names], [Output("path", "STRING")])

    @classmethod
    def execute(cls, ckpt_name):
        return NodeOutput(str(current_paths().find_model("checkpoints", ckpt_name)))


NODES = [StubInt, StubAdd, StubPair, StubSink, StubSave, StubFail, StubOOM, StubSlow, StubLazySwitch,
         StubListMaker, StubListSum, StubRandom, StubFileStamp, StubEven, StubWidgets, StubMakeA, StubNeedsB,
         StubCountdown, StubSleep, StubGate, StubWhoAmI,
         StubCheckpoint]


def entrypoint():
    return list(NODES)
