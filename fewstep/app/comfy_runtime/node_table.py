"""``nodes`` for classic custom packs: ``MAX_RESOLUTION`` and the node table of the loaded packs.

ComfyUI's ``nodes.NODE_CLASS_MAPPINGS`` is the global dict of every registered class. Here it is a
read-only view of the registry that is loading the custom packs (the built-in nodes, then each pack's as
it registers), so a pack can look a node class up or check that one exists; registration itself goes
through the pack's own ``NODE_CLASS_MAPPINGS``, never by writing into this table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fewstep.app.comfy_runtime.devices import throw_exception_if_processing_interrupted
from fewstep.app.comfy_runtime.state import STATE

MAX_RESOLUTION = 16384  # ComfyUI's limit for width / height widgets


class _RegistryView(Mapping[str, Any]):
    """``{class_type: value}`` over the registry bound in ``comfy_runtime.state`` (empty when none)."""

    def __init__(self, field: str) -> None:
        self.field = field

    def _nodes(self) -> dict[str, Any]:
        registry = STATE.registry
        return registry.all() if registry is not None else {}

    def _value(self, node: Any) -> Any:
        return node.cls if self.field == "cls" else (node.schema.display_name or node.class_type)

    def __getitem__(self, key: str) -> Any:
        node = self._nodes().get(key)
        if node is None:
            raise KeyError(key)
        return self._value(node)

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes())

    def __len__(self) -> int:
        return len(self._nodes())


NODE_CLASS_MAPPINGS: Mapping[str, type] = _RegistryView("cls")
NODE_DISPLAY_NAME_MAPPINGS: Mapping[str, str] = _RegistryView("display_name")


def before_node_execution() -> None:
    """ComfyUI calls this before each node; packs call it to honour an interrupt."""
    throw_exception_if_processing_interrupted()
