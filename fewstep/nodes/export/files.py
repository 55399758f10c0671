"""Where the export nodes read and write: output files named as ``SaveImage`` names them, the graph as
text metadata, the editor's ``ui`` entries, and input files by the editor's annotated names."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fewstep.app.api import current_paths, safe_child
from fewstep.nodes.core.image_io import claim_output_names, next_output_path, substitute_prefix

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".m4v", ".gif", ".webp")
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl")
_ANNOTATED_FOLDERS = ("input", "output", "temp")


@dataclass(frozen=True)
class OutputSlot:
    """The next free output name for a prefix: write ``folder / f"{name}_{counter:05}_{suffix}"``."""

    folder: Path
    name: str
    subfolder: str
    counter: int
    kind: str   # "output" | "temp": the ``type`` of the editor's file reference

    def filename(self, suffix: str, offset: int = 0) -> str:
        return f"{self.name}_{self.counter + offset:05}_{suffix}"

    def item(self, filename: str, subfolder: str | None = None) -> dict[str, str]:
        """The editor's file reference ``{filename, subfolder, type}``."""
        return {"filename": filename, "subfolder": self.subfolder if subfolder is None else subfolder,
                "type": self.kind}


def output_slot(filename_prefix: str, suffix: str, width: int = 0, height: int = 0, prompt: Any = None,
                kind: str = "output") -> OutputSlot:
    """:func:`next_output_path` in the output (or temp) folder after ``%width%``/``%height%``/``%date%``
    substitution, as SaveImage, with ``slot.filename(suffix)`` claimed against other jobs and worker
    processes (:func:`claim_output_names`): write it, then ``release_output(slot.folder / name)``.
    Raises ValueError when the prefix would leave the folder."""
    paths = current_paths()
    root = paths.output_dir if kind == "output" else paths.temp_dir
    if "\x00" in filename_prefix or Path(filename_prefix).is_absolute():
        raise ValueError(f"filename_prefix {filename_prefix!r} must be a relative name inside the {kind} folder")
    prefix = substitute_prefix(filename_prefix, width, height, prompt)
    folder, name, subfolder, counter = next_output_path(root, prefix)
    def names(first: int) -> list[str]:
        return [OutputSlot(folder, name, subfolder, first, kind).filename(suffix)]

    return OutputSlot(folder, name, subfolder, claim_output_names(folder, counter, names), kind)


def graph_metadata(prompt: Any, extra_pnginfo: Any) -> dict[str, str]:
    """The graph as text entries, ComfyUI's way: ``prompt`` and each ``extra_pnginfo`` key (``workflow``)
    as JSON."""
    entries = {str(key): json.dumps(value) for key, value in (extra_pnginfo or {}).items()}
    if prompt is not None:
        entries["prompt"] = json.dumps(prompt)
    return entries


def merged_metadata(own: Mapping[str, str], prompt: Any, extra_pnginfo: Any) -> dict[str, str]:
    """A value's metadata with this run's graph over it (a loaded clip's old graph is replaced)."""
    return {**own, **graph_metadata(prompt, extra_pnginfo)}


def input_file(name: str, what: str) -> Path:
    """The file an editor name points at: ``x.mp4`` / ``sub/x.mp4`` in input/, or with a `` [input]``,
    `` [output]`` or `` [temp]`` suffix in that folder. Names leaving their folder are refused.

    Raises:
        FileNotFoundError: naming only ``name`` (the server's folders stay private).
    """
    paths = current_paths()
    relative, folder = name, paths.input_dir
    for kind in _ANNOTATED_FOLDERS:
        if name.endswith(f" [{kind}]"):
            relative, folder = name[: -len(kind) - 3], getattr(paths, f"{kind}_dir")
            break
    try:
        path = safe_child(folder, relative, what)
    except ValueError as exc:
        raise FileNotFoundError(f"{what}: {exc}") from None
    if not path.exists():
        raise FileNotFoundError(f"{what} {name!r} not found")
    return path


def list_input_files(suffixes: tuple[str, ...], subfolder: str = "", *, recursive: bool = False) -> list[str]:
    """Names ('/'-separated, relative to input/) of the files in input/``subfolder`` (and below it when
    ``recursive``, as ComfyUI lists input/3d) whose suffix is one of ``suffixes``; links leading out of input/
    are not listed."""
    root = current_paths().input_dir
    base = root / subfolder if subfolder else root
    if not base.is_dir():
        return []
    resolved_root = root.resolve()
    entries = base.rglob("*") if recursive else base.iterdir()
    found = [path for path in entries if path.is_file() and path.suffix.lower() in suffixes
             and path.resolve().is_relative_to(resolved_root)]
    return sorted(path.relative_to(root).as_posix() for path in found)
