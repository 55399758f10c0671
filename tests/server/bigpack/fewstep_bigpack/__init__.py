"""Cheap nodes for graphs of thousands of nodes (issue #24: big graphs through the server)."""

from __future__ import annotations

from fewstep.app.api import Int, Link, Node, NodeOutput, Output, Schema


class ChainStart(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ChainStart", category="fewstep/test", inputs=[Int("value", 0)],
                      outputs=[Output("INT", "INT")])

    @classmethod
    def execute(cls, value: int) -> NodeOutput:
        return NodeOutput(value)


class ChainStep(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ChainStep", category="fewstep/test", inputs=[Link("a", "INT")],
                      outputs=[Output("INT", "INT")])

    @classmethod
    def execute(cls, a: int) -> NodeOutput:
        return NodeOutput(a + 1)


class ChainShow(Node):
    """Output node: the value reaches the client in ``executed``."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ChainShow", category="fewstep/test", is_output_node=True,
                      inputs=[Link("a", "INT")], outputs=[Output("INT", "INT")])

    @classmethod
    def execute(cls, a: int) -> NodeOutput:
        return NodeOutput(a, ui={"value": [a]})


def entrypoint() -> list[type]:
    return [ChainStart, ChainStep, ChainShow]
