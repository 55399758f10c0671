"""``folder_paths`` for classic custom packs: ComfyUI's folder functions over the running app's Paths.

ComfyUI keeps its folders in module globals; here every function reads the Paths of the app serving the
request or running the node (``app.api.current_paths()``), plus the model folders packs added with
:func:`add_model_folder_path` (kept in ``comfy_runtime.state``). Names a pack passes in are checked like
uploads (``app.api.safe_child``): a name cannot leave its folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fewstep.app.api import MODEL_FOLDERS, check_name, current_paths, safe_child
from fewstep.app.comfy_runtime.state import STATE

supported_pt_extensions: set[str] = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
_ANNOTATIONS = ("input", "output", "temp")


def get_input_directory() -> str:
    return str(current_paths().input_dir)


def get_output_directory() -> str:
    return str(current_paths().output_dir)


def get_temp_directory() -> str:
    return str(current_paths().temp_dir)


def get_user_directory() -> str:
    return str(current_paths().user_dir)


def get_directory_by_type(type_name: str) -> str | None:
    """``"input" | "output" | "temp"`` -> that folder (None for anything else, as ComfyUI)."""
    return {"input": get_input_directory, "output": get_output_directory,
            "temp": get_temp_directory}.get(type_name, lambda: None)()


def __getattr__(name: str) -> Any:
    """ComfyUI's module attributes, read from the current Paths (PEP 562)."""
    paths = current_paths()
    if name in ("output_directory", "input_directory", "temp_directory", "user_directory"):
        return str(getattr(paths, name.replace("_directory", "_dir")))
    if name == "models_dir":
        return str(paths.model_roots[0]) if paths.model_roots else "models"
    if name == "base_path":
        return str(paths.input_dir.parent)
    if name == "folder_names_and_paths":  # a snapshot: add folders with add_model_folder_path
        return {folder: (get_folder_paths(folder), set(_extensions(folder))) for folder in _folders()}
    raise AttributeError(f"module 'folder_paths' (fewstep's ComfyUI runtime) has no attribute {name!r}")


def _folders() -> list[str]:
    return list(dict.fromkeys([*MODEL_FOLDERS, *STATE.extra_folders]))


def _extensions(folder: str) -> tuple[str, ...]:
    """ComfyUI lists model files of the known folders by extension; folders packs add list every file."""
    return tuple(sorted(supported_pt_extensions)) if folder in MODEL_FOLDERS else ()


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """Add a directory to a model folder (first when ``is_default``), as ComfyUI does."""
    with STATE.lock:
        folders = STATE.extra_folders.setdefault(folder_name, [])
        if full_folder_path in folders:
            folders.remove(full_folder_path)
        if is_default:
            folders.insert(0, full_folder_path)
        else:
            folders.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list[str]:
    """Every directory of a model folder: the app's model roots, then those packs added."""
    extra = list(STATE.extra_folders.get(folder_name, []))
    return [str(d) for d in current_paths().model_dirs(folder_name)] + extra


def filter_files_extensions(files: list[str], extensions: Any) -> list[str]:
    extensions = tuple(e.lower() for e in extensions or ())
    return sorted(f for f in files if not extensions or f.lower().endswith(extensions))


def get_filename_list(folder_name: str) -> list[str]:
    """Relative file names of a model folder ('/'-separated), first directory winning on clashes."""
    suffixes = _extensions(folder_name)
    names = dict.fromkeys(current_paths().list_models(folder_name, suffixes))
    for directory in STATE.extra_folders.get(folder_name, []):
        for parent, subdirs, files in os.walk(directory, followlinks=True):
            subdirs.sort()
            rel = os.path.relpath(parent, directory)
            for name in sorted(files):
                if not suffixes or name.lower().endswith(suffixes):
                    names.setdefault(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"), None)
    return list(names)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The file's path in the first directory of the folder that has it, else None. The name may not be
    absolute or climb out (``..``); symlinked model files and folders are followed, as for fewstep's own
    loaders (``Paths.find_model``): models often live on another disk."""
    try:
        check_name(filename, "model file name")
    except ValueError:
        return None
    for directory in get_folder_paths(folder_name):
        candidate = Path(directory) / filename
        if candidate.is_file():
            return str(candidate)
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    found = get_full_path(folder_name, filename)
    if found is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return found


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """``"x.png [output]"`` -> ``("x.png", <output dir>)``; no annotation -> ``(name, None)``."""
    for kind in _ANNOTATIONS:
        if name.endswith(f" [{kind}]"):
            return name[: -len(kind) - 3], get_directory_by_type(kind)
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """The file an editor name points at (input folder unless annotated); the name may not leave it."""
    name, base = annotated_filepath(name)
    base = base or default_dir or get_input_directory()
    return str(safe_child(base, name, "file name"))


def exists_annotated_filepath(name: str) -> bool:
    try:
        return Path(get_annotated_filepath(name)).exists()
    except ValueError:
        return False


def substitute_time(prefix: str, width: int = 0, height: int = 0) -> str:
    """ComfyUI's server-side prefix variables: ``%width%``, ``%height%``, ``%year%``, ``%month%``, ``%day%``,
    ``%hour%``, ``%minute%``, ``%second%`` (``folder_paths.py::get_save_image_path``'s ``compute_vars``)."""
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    for key, value in (("width", width), ("height", height), ("year", now.tm_year), ("month", now.tm_mon),
                       ("day", now.tm_mday), ("hour", now.tm_hour), ("minute", now.tm_min),
                       ("second", now.tm_sec)):
        text = str(value) if key in ("width", "height", "year") else f"{value:02d}"
        prefix = prefix.replace(f"%{key}%", text)
    return prefix


def next_counter(folder: str | Path, filename: str) -> int:
    """1 + the highest counter of ``<filename>_<digits>_...`` files in ``folder`` (1 if none): ComfyUI's
    rule, by plain string comparison (``[``, ``]``, ``*`` and ``?`` in a prefix are ordinary characters)."""
    highest = 0
    wanted = os.path.normcase(filename)
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return 1
    for entry in entries:
        head, sep, rest = entry[:len(filename)], entry[len(filename):len(filename) + 1], entry[len(filename) + 1:]
        if os.path.normcase(head) != wanted or sep != "_":
            continue
        digits = rest.split("_")[0]
        highest = max(highest, int(digits) if digits.isdigit() else 0)
    return highest + 1


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0,
                        image_height: int = 0) -> tuple[str, str, int, str, str]:
    """``(full_output_folder, filename, counter, subfolder, filename_prefix)`` as ComfyUI returns them;
    the prefix's folder must stay inside ``output_dir`` (ValueError otherwise)."""
    filename_prefix = substitute_time(filename_prefix, image_width, image_height)
    subfolder, filename = os.path.split(os.path.normpath(filename_prefix))
    folder = safe_child(output_dir, subfolder, "filename prefix") if subfolder else Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder), filename, next_counter(folder, filename), subfolder, filename_prefix
