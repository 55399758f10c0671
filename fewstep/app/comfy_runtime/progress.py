"""``comfy.utils`` for classic custom packs: ``ProgressBar`` and ``common_upscale``.

``ProgressBar`` reports through the running job's progress hook (``app.api.report_progress``): the same
``progress`` / ``progress_state`` messages and websocket preview frames as fewstep's own nodes, and an
interrupt check at every update, as ComfyUI's global progress hook does.
"""

from __future__ import annotations

from typing import Any

from fewstep.app.api import current_context
from fewstep.app.comfy_runtime.devices import throw_exception_if_processing_interrupted

PROGRESS_BAR_ENABLED = True


def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED  # ComfyUI's switch, kept for packs that flip it
    PROGRESS_BAR_ENABLED = enabled


def preview_image(preview: Any) -> Any:
    """What the progress hook sends: ComfyUI's ``(format, PIL image, max_size)`` tuple as it is (the
    server encodes it in that format and size), a PIL image, or the first image of an IMAGE tensor
    ``[B,H,W,C]`` / ``[H,W,C]`` in 0..1 as a PIL image; None otherwise."""
    if isinstance(preview, tuple) and len(preview) >= 2:
        return (preview[0], preview[1], preview[2] if len(preview) > 2 else None) \
            if hasattr(preview[1], "save") else None
    if preview is None or hasattr(preview, "save"):
        return preview
    if hasattr(preview, "detach"):
        import numpy as np
        from PIL import Image

        array = preview.detach().float().cpu().numpy()
        array = array[0] if array.ndim == 4 else array  # [H,W,C]
        return Image.fromarray(np.clip(255.0 * array, 0, 255).astype(np.uint8))
    return None


class ProgressBar:
    """ComfyUI's progress bar: ``update(n)`` adds n steps, ``update_absolute(value, total, preview)`` sets them.

    Args:
        total: the number of steps.
        node_id: accepted for compatibility; progress is reported for the node that is running.
    """

    def __init__(self, total: float, node_id: str | None = None) -> None:
        self.total = total
        self.current = 0.0
        self.node_id = node_id

    def update_absolute(self, value: float, total: float | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        context = current_context()
        if context is not None and PROGRESS_BAR_ENABLED:
            context.report(self.current, self.total, preview_image(preview), None)
        throw_exception_if_processing_interrupted()

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)


def common_upscale(samples: Any, width: int, height: int, upscale_method: str, crop: str) -> Any:
    """Resize ``[B,C,H,W]`` samples to ``width`` x ``height`` with torch (``crop="center"`` keeps the aspect
    ratio by cropping first). ``lanczos`` and ``bislerp`` are ComfyUI's own kernels and are not provided."""
    import torch.nn.functional as functional

    if crop == "center":
        old_w, old_h = samples.shape[-1], samples.shape[-2]
        old_aspect, new_aspect = old_w / old_h, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        samples = samples.narrow(-2, y, old_h - y * 2).narrow(-1, x, old_w - x * 2)
    modes = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic",
             "nearest": "nearest"}
    if upscale_method not in modes:
        raise NotImplementedError(f"comfy.utils.common_upscale: method {upscale_method!r} is not provided by "
                                  f"fewstep's ComfyUI runtime (provided: {sorted(modes)})")
    return functional.interpolate(samples, size=(height, width), mode=modes[upscale_method])
