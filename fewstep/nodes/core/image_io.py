"""PNG files with the graph embedded (ComfyUI's convention) and the output-file naming rule.

ComfyUI writes the API-format prompt under the PNG text key ``prompt`` and every ``extra_pnginfo`` entry
(the editor's ``workflow``) under its own key, each as JSON; dropping such a PNG on the editor, or
:func:`graph_from_png`, gives the graph back.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def next_output_path(output_dir: Path, filename_prefix: str) -> tuple[Path, str, str, int]:
    """ComfyUI's ``get_save_image_path``: ``prefix`` may hold sub-folders; files are
    ``<name>_<counter:05>_.png`` with the counter one above the highest existing one.

    The counter is found by plain string comparison, as ComfyUI's ``folder_paths.py::get_save_image_path``
    (``map_filename``) does: a name holding ``[``, ``]``, ``*`` or ``?`` is no pattern (a glob made the
    counter stick at 1 and files were overwritten).

    Returns (folder, name, subfolder, first counter); refuses prefixes that leave ``output_dir``."""
    output_dir = output_dir.resolve()
    folder = (output_dir / filename_prefix).parent.resolve()
    if folder != output_dir and output_dir not in folder.parents:
        raise ValueError(f"filename_prefix {filename_prefix!r} would save outside the output folder")
    name = Path(filename_prefix).name or "ComfyUI"
    subfolder = folder.relative_to(output_dir).as_posix() if folder != output_dir else ""
    highest = 0
    for entry in (os.listdir(folder) if folder.is_dir() else ()):
        if entry[:len(name)] != name or entry[len(name):len(name) + 1] != "_":
            continue
        digits = entry[len(name) + 1:].split("_")[0].split(".")[0]
        highest = max(highest, int(digits) if digits.isdigit() else 0)
    return folder, name, subfolder, highest + 1


_VARIABLE = re.compile(r"%([^%]+)%")
_DATE_TOKEN = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")


def format_date(fmt: str, now: datetime.datetime) -> str:
    """The editor's ``%date:FORMAT%``: d/dd, M/MM, h/hh, m/mm, s/ss (zero-padded to the token's length),
    yy and yyyy (ComfyUI frontend ``utils/formatUtil.ts::formatDate``)."""
    parts = {"d": now.day, "M": now.month, "h": now.hour, "m": now.minute, "s": now.second}

    def token(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "yy":
            return str(now.year)[2:]
        if text == "yyyy":
            return str(now.year)
        if text[0] in parts:
            return str(parts[text[0]]).zfill(len(text))
        return text

    return _DATE_TOKEN.sub(token, fmt)


def _widget_value(prompt: dict[str, Any] | None, node_name: str, widget: str) -> str | None:
    """``%Node.widget%``: the widget's value on the first node whose class type (the editor's "Node name
    for S&R") or else title is ``node_name``; '/' and '\\' become '_' as the editor does."""
    nodes = [n for n in (prompt or {}).values() if isinstance(n, dict)]
    matches = [n for n in nodes if n.get("class_type") == node_name] or \
        [n for n in nodes if (n.get("_meta") or {}).get("title") == node_name]
    if not matches:
        return None
    value = (matches[0].get("inputs") or {}).get(widget)
    if value is None or (isinstance(value, list) and len(value) == 2):  # absent, or a link: not a widget
        return None
    return re.sub(r"[/\\]", "_", str(value))


def substitute_prefix(prefix: str, width: int, height: int, prompt: dict[str, Any] | None = None,
                      now: datetime.datetime | None = None) -> str:
    """A filename prefix with ComfyUI's variables replaced: the editor's ``%date:FORMAT%`` and
    ``%Node.widget%`` (applied by the editor before queueing, here for graphs queued without it) and the
    server's ``%width%``, ``%height%``, ``%year%``, ``%month%``, ``%day%``, ``%hour%``, ``%minute%``,
    ``%second%`` (``folder_paths.py::get_save_image_path``). Unknown variables stay as written."""
    if "%" not in prefix:
        return prefix
    now = now or datetime.datetime.now()
    fixed = {"width": str(width), "height": str(height), "year": str(now.year), "month": f"{now.month:02d}",
             "day": f"{now.day:02d}", "hour": f"{now.hour:02d}", "minute": f"{now.minute:02d}",
             "second": f"{now.second:02d}"}

    def variable(match: re.Match[str]) -> str:
        text = match.group(1)
        if text in fixed:
            return fixed[text]
        if text.startswith("date:"):
            return format_date(text[5:], now)
        node_name, dot, widget = text.partition(".")
        if dot and "." not in widget:
            value = _widget_value(prompt, node_name, widget)
            if value is not None:
                return value
        return match.group(0)

    return _VARIABLE.sub(variable, prefix)


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
