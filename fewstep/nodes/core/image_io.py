"""PNG files with the graph embedded (ComfyUI's convention) and the output-file naming rule.

ComfyUI writes the API-format prompt under the PNG text key ``prompt`` and every ``extra_pnginfo`` entry
(the editor's ``workflow``) under its own key, each as JSON; dropping such a PNG on the editor, or
:func:`graph_from_png`, gives the graph back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def next_output_path(output_dir: Path, filename_prefix: str) -> tuple[Path, str, str, int]:
    """ComfyUI's ``get_save_image_path``: ``prefix`` may hold sub-folders; files are
    ``<name>_<counter:05>_.png`` with the counter one above the highest existing one.

    Returns (folder, name, subfolder, first counter); refuses prefixes that leave ``output_dir``."""
    output_dir = output_dir.resolve()
    folder = (output_dir / filename_prefix).parent.resolve()
    if folder != output_dir and output_dir not in folder.parents:
        raise ValueError(f"filename_prefix {filename_prefix!r} would save outside the output folder")
    name = Path(filename_prefix).name or "ComfyUI"
    subfolder = folder.relative_to(output_dir).as_posix() if folder != output_dir else ""
    pattern = re.compile(rf"^{re.escape(name)}_(\d+)_?\.")
    counters = [int(m.group(1)) for p in folder.glob(f"{name}_*") if (m := pattern.match(p.name))] \
        if folder.is_dir() else []
    return folder, name, subfolder, max(counters, default=0) + 1


def png_info(prompt: dict[str, Any] | None, extra_pnginfo: dict[str, Any] | None) -> PngInfo:
    """Text chunks: ``prompt`` and each extra_pnginfo key, as JSON."""
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def save_png(array: Any, path: Path, info: PngInfo | None, compress_level: int = 4) -> None:
    """uint8 [H, W, 3] array -> PNG with the given text chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, pnginfo=info, compress_level=compress_level)


def graph_from_png(path: str | Path) -> dict[str, Any]:
    """The graphs embedded by SaveImage: ``{"prompt": {...}, "workflow": {...}}`` (keys absent when missing).

    Raises ValueError naming the file when a chunk is not valid JSON."""
    path = Path(path)
    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or {})
    out: dict[str, Any] = {}
    for key in ("prompt", "workflow"):
        if key in text:
            try:
                out[key] = json.loads(text[key])
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: PNG text chunk {key!r} is not JSON ({exc})") from exc
    return out
