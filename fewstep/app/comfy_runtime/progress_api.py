"""``comfy_api.latest`` (and ``comfy_api.v0_0_2``) for classic custom packs: progress only.

``ComfyAPI().execution.set_progress`` (async) and ``ComfyAPISync().execution.set_progress`` report
progress (and an optional preview image) for the running node, as ``comfy.utils.ProgressBar`` does. The
v3 node schema (``io``, ``ui``, ``ComfyExtension``) is not provided: packs written for it do not load.
"""

from __future__ import annotations

from typing import Any

from fewstep.app.api import current_context
from fewstep.app.comfy_runtime.devices import throw_exception_if_processing_interrupted
from fewstep.app.comfy_runtime.progress import preview_image


def _set_progress(value: float, max_value: float, preview: Any) -> None:
    context = current_context()
    if context is None:
        raise RuntimeError("set_progress called outside a running node")
    context.report(value, max_value, preview_image(preview), None)
    throw_exception_if_processing_interrupted()


class _Execution:
    async def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                           preview_image: Any = None, ignore_size_limit: bool = False) -> None:
        _set_progress(value, max_value, preview_image)


class _ExecutionSync:
    def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                     preview_image: Any = None, ignore_size_limit: bool = False) -> None:
        _set_progress(value, max_value, preview_image)


class ComfyAPI:
    """``await ComfyAPI().execution.set_progress(value, max_value, preview_image=...)``."""

    def __init__(self) -> None:
        self.execution = _Execution()


class ComfyAPISync:
    """``ComfyAPISync().execution.set_progress(value, max_value, preview_image=...)``."""

    def __init__(self) -> None:
        self.execution = _ExecutionSync()
