"""``fewstep run``'s progress line on a terminal: node, step, and named numbers such as the loss."""

from __future__ import annotations

import time
from typing import Any, TextIO

MIN_INTERVAL_S = 0.1   # redraw at most 10 times a second: trainers report every step
# progress keys the line shows as "step value/max" or not at all (trainers also send their step as "step")
SHOWN_OTHERWISE = ("value", "max", "prompt_id", "node", "step")


class TerminalProgress:
    """An executor ``emit(event, data)`` that redraws one status line on ``stream``.

    Args:
        stream: where to draw (stderr: stdout carries the output paths scripts read).
        class_types: ``{node id: class_type}`` of the graph, to name nodes.
    """

    def __init__(self, stream: TextIO, class_types: dict[str, str]) -> None:
        self.stream = stream
        self.class_types = class_types
        self.last_draw = 0.0
        self.width = 0

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "executing" and data.get("node") is not None:
            self._draw(self._name(data["node"]), force=True)
        elif event == "progress":
            extra = "".join(f"  {k} {_number(v)}" for k, v in data.items()
                            if k not in SHOWN_OTHERWISE and isinstance(v, int | float))
            text = f"{self._name(data.get('node'))}  step {_number(data['value'])}/{_number(data['max'])}{extra}"
            self._draw(text, force=data["value"] >= data["max"])
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            self.close()

    def close(self) -> None:
        if self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0

    def _name(self, node_id: Any) -> str:
        return f"node {node_id} ({self.class_types.get(str(node_id), '?')})"

    def _draw(self, text: str, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self.last_draw < MIN_INTERVAL_S:
            return
        self.last_draw = now
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"
