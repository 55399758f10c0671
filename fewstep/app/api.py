"""The node API: what a node pack writes against.

A node is a small class with a declarative :class:`Schema` and a pure ``execute`` classmethod::

    from fewstep.app.api import Node, Schema, Int, Link, Output, NodeOutput

    class Add(Node):
        @classmethod
        def define_schema(cls) -> Schema:
            return Schema(
                node_id="Add", category="math",
                inputs=[Int("a", default=0), Int("b", default=0, min=-10, max=10)],
                outputs=[Output("sum", "INT")],
            )

        @classmethod
        def execute(cls, a: int, b: int) -> NodeOutput:
            return NodeOutput(a + b)

A pack exposes ``entrypoint() -> list[type[Node]]``. Classic ComfyUI classes (``INPUT_TYPES``,
``RETURN_TYPES``, ``FUNCTION`` ...) are accepted too; the registry adapts them (``app.classic``).

Inside ``execute`` a node reaches the running job through :func:`current_context` — progress,
interrupt checks and the hidden values (node id, prompt, extra png info). The engine sets it; nodes never
construct it.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fewstep.app.writes import pending_path

# ---------------------------------------------------------------------------------------------
# Inputs and outputs
# ---------------------------------------------------------------------------------------------

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
ANY = "*"


@dataclass(frozen=True)
class Input:
    """One input port of a node.

    Args:
        name: the keyword ``execute`` receives.
        type: a widget type (``INT``, ``FLOAT``, ``STRING``, ``BOOLEAN``, ``COMBO``) or a linked data type
            (``IMAGE``, ``MODEL`` ..., ``*`` for any; ``"A,B"`` accepts either).
        default / min / max / step: widget defaults and limits, checked by validation.
        choices: the options of a ``COMBO``; a callable is evaluated on each schema request (file lists).
        multiline: a ``STRING`` shown as a text area.
        optional: the input may be left unconnected; ``execute`` then receives nothing for it.
        lazy: evaluated only when ``check_lazy_status`` asks for it.
        force_input: a widget type that must come from a link (no widget in the editor).
        raw_link: ``execute`` receives the link ``[node_id, slot]`` instead of the value (for expansion).
        control_after_generate: the editor shows its seed-control widget after this one.
        tooltip / display_name: shown in the editor.
        extra: other editor options passed through to ``/object_info`` untouched (e.g. ``image_upload``).
    """

    name: str
    type: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    round: float | None = None
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    multiline: bool = False
    optional: bool = False
    lazy: bool = False
    force_input: bool = False
    raw_link: bool = False
    control_after_generate: bool = False
    tooltip: str | None = None
    display_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_widget(self) -> bool:
        """True when the value is a constant typed into the editor (not a link)."""
        return self.type in WIDGET_TYPES and not self.force_input

    def resolved_choices(self) -> list[Any]:
        """The combo options, evaluating a callable source."""
        if self.choices is None:
            return []
        return list(self.choices() if callable(self.choices) else self.choices)


def Int(name: str, default: int = 0, *, min: int = -(2**63), max: int = 2**63 - 1, step: int = 1,
        **kw: Any) -> Input:
    """An integer widget (``INT``)."""
    return Input(name, "INT", default=default, min=min, max=max, step=step, **kw)


def Float(name: str, default: float = 0.0, *, min: float = -1e30, max: float = 1e30, step: float = 0.01,
          **kw: Any) -> Input:
    """A float widget (``FLOAT``)."""
    return Input(name, "FLOAT", default=default, min=min, max=max, step=step, **kw)


def String(name: str, default: str = "", *, multiline: bool = False, **kw: Any) -> Input:
    """A text widget (``STRING``)."""
    return Input(name, "STRING", default=default, multiline=multiline, **kw)


def Boolean(name: str, default: bool = False, **kw: Any) -> Input:
    """A toggle (``BOOLEAN``)."""
    return Input(name, "BOOLEAN", default=default, **kw)


def Combo(name: str, choices: Sequence[Any] | Callable[[], Sequence[Any]], default: Any = None,
          **kw: Any) -> Input:
    """A drop-down (``COMBO``); ``default`` falls back to the first choice."""
    return Input(name, "COMBO", default=default, choices=choices, **kw)


def Link(name: str, type: str, **kw: Any) -> Input:
    """A linked data input (``IMAGE``, ``MODEL``, ...)."""
    return Input(name, type, **kw)


@dataclass(frozen=True)
class Output:
    """One output port.

    Args:
        name: label shown in the editor (``RETURN_NAMES``).
        type: data type name.
        is_list: ``execute`` returns a Python list whose items flow downstream one by one.
    """

    name: str
    type: str
    is_list: bool = False
    tooltip: str | None = None


class Hidden(str, enum.Enum):
    """Values the engine supplies rather than the graph (ComfyUI's hidden inputs)."""

    UNIQUE_ID = "UNIQUE_ID"          # this node's id in the prompt (str); adds the id to the cache key
    PROMPT = "PROMPT"                # the whole API-format prompt (dict)
    EXTRA_PNGINFO = "EXTRA_PNGINFO"  # extra_data.extra_pnginfo, holds the UI workflow (dict)
    DYNPROMPT = "DYNPROMPT"          # the live graph incl. expanded nodes (app.graph.DynamicGraph)


@dataclass(frozen=True)
class Schema:
    """A node's declaration.

    Args:
        node_id: globally unique class name (``class_type`` in graphs).
        display_name / category / description: shown in the editor.
        inputs / outputs: ports in display order.
        hidden: hidden values passed to ``execute`` under ``hidden_names`` (keyword = enum value lower-cased
            for declarative nodes; classic nodes name their own keywords).
        is_output_node: a graph sink; only output nodes and their ancestors run.
        not_idempotent: never share a cached result between two nodes of this class in one graph.
        is_input_list: ``execute`` is called once with every input as a full list.
        enable_expand: ``execute`` may return a subgraph (``NodeOutput(expand=...)``).
        version: bump when the node's behaviour changes; part of the cache key.
    """

    node_id: str
    display_name: str | None = None
    category: str = "fewstep"
    description: str = ""
    inputs: Sequence[Input] = ()
    outputs: Sequence[Output] = ()
    hidden: Sequence[Hidden] = ()
    is_output_node: bool = False
    not_idempotent: bool = False
    is_input_list: bool = False
    enable_expand: bool = False
    version: int = 1
    deprecated: bool = False
    experimental: bool = False

    def input(self, name: str) -> Input | None:
        """The input called ``name``, or None."""
        for port in self.inputs:
            if port.name == name:
                return port
        return None


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


class ExecutionBlocker:
    """Return this in place of an output value to block everything downstream.

    ``message=None`` blocks silently; a string is reported as an ``execution_error`` of type
    ``ExecutionBlocked`` when a node would consume the blocked value.
    """

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


@dataclass
class NodeOutput:
    """What ``execute`` returns.

    Args:
        values: one value per output port (a link ``[node_id, slot]`` into ``expand`` is allowed).
        ui: shown in the editor and recorded in history, e.g. ``{"images": [{"filename", "subfolder", "type"}]}``.
        expand: an API-format subgraph that replaces this node (``enable_expand`` must be set).
        block: block all outputs with this message (an :class:`ExecutionBlocker`).
    """

    values: tuple[Any, ...]
    ui: dict[str, list[Any]] | None = None
    expand: dict[str, Any] | None = None

    def __init__(self, *values: Any, ui: dict[str, list[Any]] | None = None,
                 expand: dict[str, Any] | None = None, block: str | None = None) -> None:
        self.values = values
        self.ui = ui
        self.expand = expand
        if block is not None:
            self.values = tuple(ExecutionBlocker(block) for _ in (values or (None,)))


class Node:
    """Base class of declarative nodes. Subclasses override ``define_schema`` and ``execute``.

    Optional hooks (all classmethods, all receive the constant inputs by keyword; linked ones are None):
        fingerprint_inputs(**inputs) -> hashable   goes into the cache key; NaN means "always re-run".
        validate_inputs(**inputs) -> True | str     custom validation; the named inputs skip range checks.
        check_lazy_status(**inputs) -> list[str]    lazy inputs still needed (unevaluated ones are None).
    """

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **inputs: Any) -> NodeOutput | tuple[Any, ...]:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# The running job, as seen from inside a node
# ---------------------------------------------------------------------------------------------


class InterruptedError_(Exception):
    """Raised inside a node when the job was interrupted (the executor reports it, not as a failure)."""


@dataclass
class ExecutionContext:
    """Set by the executor around each node call.

    Args:
        prompt_id / node_id / class_type: what is running.
        prompt: the API-format prompt; extra_pnginfo: ``extra_data["extra_pnginfo"]`` (may be {}).
        report: ``report(value, max, preview, info)`` sends a progress event; preview is a PIL image or None;
            ``info`` is a dict of extra numbers (e.g. ``loss``, ``lr``) merged into the ``progress`` message,
            which the editor's loss-curve widget plots live.
        is_interrupted: True once the job should stop.
    """

    prompt_id: str
    node_id: str
    class_type: str
    prompt: dict[str, Any]
    extra_pnginfo: dict[str, Any]
    report: Callable[[float, float, Any, dict[str, Any] | None], None]
    is_interrupted: Callable[[], bool]
    extra: dict[str, Any] = field(default_factory=dict)

    def progress(self, value: float, total: float, preview: Any = None, **info: float) -> None:
        """Report progress (optionally a preview image and named numbers such as ``loss=``), then raise if
        the job was interrupted."""
        self.report(value, total, preview, info or None)
        self.check_interrupt()

    def check_interrupt(self) -> None:
        """Raise :class:`InterruptedError_` if the job was interrupted; long loops call this."""
        if self.is_interrupted():
            raise InterruptedError_(f"interrupted in node {self.node_id} ({self.class_type})")


_CONTEXT: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar(
    "fewstep_execution_context", default=None
)


def current_context() -> ExecutionContext | None:
    """The context of the node running in this thread/task, or None outside the executor."""
    return _CONTEXT.get()


def set_context(context: ExecutionContext | None) -> contextvars.Token:
    """Used by the executor only."""
    return _CONTEXT.set(context)


def reset_context(token: contextvars.Token) -> None:
    """Used by the executor only."""
    _CONTEXT.reset(token)


def check_interrupted() -> None:
    """Raise :class:`InterruptedError_` if the running job was interrupted; a no-op outside the executor.

    Library code without the context calls it between chunks of heavy work (decode tiles, attention
    chunks): an interrupt otherwise waited for the whole operation, minutes for a huge image."""
    context = current_context()
    if context is not None:
        context.check_interrupt()


def report_progress(value: float, total: float, preview: Any = None, **info: float) -> None:
    """Progress from library code that does not hold the context; a no-op outside the executor."""
    context = current_context()
    if context is not None:
        context.progress(value, total, preview, **info)


def cached_model(path: str | os.PathLike[str], dtype: Any, device: Any, loader: Callable[[], Any]) -> Any:
    """Load a model through the running app's model cache (keyed by file, dtype and device).

    Inside the executor the cache is ``current_context().extra["model_cache"]`` (an
    ``app.cache.ModelCache``); outside it (scripts, tests) ``loader()`` is simply called.
    """
    context = current_context()
    cache = context.extra.get("model_cache") if context is not None else None
    if cache is None:
        return loader()
    return cache.get_or_load(path, dtype, device, loader)


def write_output(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Write an output file with ``write(file)``; inside the executor in the background.

    In a job, the name is reserved at once (a ``<name>.part`` placeholder), ``write`` runs on the
    executor's writer thread while the next nodes and jobs run, and ``<name>`` appears complete (renamed
    from the placeholder) before the job ends; a failed write fails the job. ``write`` must own what it
    reads (copy arrays that the caller may change). Outside the executor the file is written now.
    See ``app.writes``."""
    path = Path(path)
    context = current_context()
    writer = context.extra.get("output_writer") if context is not None else None
    if writer is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = pending_path(path)   # the placeholder, when reserve_output claimed the name
        try:
            with part.open("wb") as file:
                write(file)
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return
    writer.submit(context.prompt_id, context.node_id, context.class_type, path, write)


def reserve_output(paths: Sequence[str | os.PathLike[str]]) -> bool:
    """Claim output file names before writing them, also against other processes sharing the folder.

    Each name is claimed by creating its empty ``<name>.part`` placeholder exclusively (``O_EXCL``), so two
    workers (``fewstep serve --workers N``) that scanned the folder at the same moment and picked the same
    counter cannot both claim it: the second gets False and takes the next counter. A name whose file
    already exists is not claimed either. On False no placeholder of this call is left behind.

    A claimed name is written by :func:`write_output` (which fills the placeholder) or, by a writer of its
    own, followed by :func:`release_output`."""
    claimed: list[Path] = []
    for raw in paths:
        path = Path(raw)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if path.exists():
                raise FileExistsError(path)
            os.close(os.open(pending_path(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            for done in claimed:
                done.unlink(missing_ok=True)
            return False
        claimed.append(pending_path(path))
    return True


def release_output(path: str | os.PathLike[str]) -> None:
    """Drop the claim of :func:`reserve_output` on ``path`` once its own writer has finished (or failed)."""
    pending_path(Path(path)).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Where files live (ComfyUI's folder_paths, as an object passed down instead of a global)
# ---------------------------------------------------------------------------------------------

MODEL_FOLDERS = (
    "checkpoints", "loras", "vae", "text_encoders", "diffusion_models", "embeddings", "clip",
    "unet", "upscale_models", "controlnet", "quant_configs",
)
# ComfyUI's older folder names that mean the same thing as ours.
FOLDER_ALIASES = {"clip": "text_encoders", "unet": "diffusion_models"}


class ListingCache:
    """Model-folder listings kept until a directory they came from changes (as ComfyUI's filename cache).

    Adding, removing or renaming a file changes the modification time of the directory that holds it, so
    a listing is still current while every directory the scan walked (and every root that was missing)
    has the same ``st_mtime_ns``: one ``stat`` per directory instead of a walk over every file. A large
    models folder is then cheap to validate against on every ``POST /prompt``.
    """

    # Linux stamps mtimes from a coarse clock (one tick is 1-10 ms): a file added in the same tick as an
    # earlier change leaves the mtime as it was. A listing is only kept when every directory it walked
    # was last changed this long before the scan began.
    SETTLED_S = 2.0

    def __init__(self) -> None:
        self._entries: dict[Any, tuple[list[str], dict[str, int | None]]] = {}
        self._lock = threading.Lock()

    def listing(self, key: Any, scan: Callable[[], tuple[list[str], dict[str, int | None]]]) -> list[str]:
        """The cached names for ``key`` if no directory changed, else ``scan()``'s (names, directory mtimes)."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and all(_mtime_ns(d) == m for d, m in entry[1].items()):
            return list(entry[0])
        settled_ns = time.time_ns() - int(self.SETTLED_S * 1e9)
        names, mtimes = scan()
        with self._lock:
            if all(m is None or m < settled_ns for m in mtimes.values()):
                self._entries[key] = (names, mtimes)
            else:
                self._entries.pop(key, None)
        return list(names)


def _mtime_ns(directory: str) -> int | None:
    try:
        return os.stat(directory).st_mtime_ns
    except OSError:
        return None


def _scan_model_dirs(directories: list[Path], suffixes: tuple[str, ...]) -> tuple[list[str], dict[str, int | None]]:
    """Relative file names under each directory (symlinked folders followed, as ComfyUI does), first
    directory winning on clashes, each directory's names in path order; plus every walked directory's mtime."""
    found: dict[str, None] = {}
    mtimes: dict[str, int | None] = {}
    for directory in directories:
        mtimes[str(directory)] = _mtime_ns(str(directory))
        names = []
        for parent, subdirs, files in os.walk(directory, followlinks=True):
            if parent != str(directory):
                mtimes[parent] = _mtime_ns(parent)
            subdirs.sort()
            rel = os.path.relpath(parent, directory)
            for name in files:
                if (not suffixes or name.lower().endswith(suffixes)) and os.path.isfile(os.path.join(parent, name)):
                    names.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
        for name in sorted(names, key=lambda n: n.split("/")):
            found.setdefault(name, None)
    return list(found), mtimes


@dataclass(frozen=True)
class Paths:
    """Where a running app reads models and inputs and writes outputs.

    Args:
        model_roots: one or more models directories in ComfyUI's layout (``checkpoints/``, ``loras/`` ...);
            pointing at an existing ComfyUI ``models/`` works. Earlier roots win on name clashes.
        input_dir / output_dir / temp_dir / user_dir: ComfyUI's ``input``, ``output``, ``temp``, ``user``.
    """

    model_roots: tuple[Path, ...] = ()
    input_dir: Path = Path("input")
    output_dir: Path = Path("output")
    temp_dir: Path = Path("temp")
    user_dir: Path = Path("user")
    listings: ListingCache = field(default_factory=ListingCache, compare=False, repr=False)

    def model_dirs(self, folder: str) -> list[Path]:
        """Every directory that holds files of ``folder`` (aliases included), existing or not."""
        names = {folder} | {old for old, new in FOLDER_ALIASES.items() if new == folder}
        names |= {FOLDER_ALIASES[folder]} if folder in FOLDER_ALIASES else set()
        return [root / name for root in self.model_roots for name in sorted(names)]

    def list_models(self, folder: str, suffixes: tuple[str, ...] = ()) -> list[str]:
        """Relative file names (with subfolders, '/'-separated) under ``folder``, sorted, no duplicates.

        Cached until a directory under ``folder`` changes (:class:`ListingCache`)."""
        directories = self.model_dirs(folder)
        return self.listings.listing((folder, suffixes), lambda: _scan_model_dirs(directories, suffixes))

    def find_model(self, folder: str, name: str) -> Path:
        """The file ``name`` under ``folder``; raises FileNotFoundError naming where it looked.

        Raises:
            ValueError: ``folder`` is not one folder name, or ``name`` is absolute or climbs out (``..``)
                (an absolute ``folder`` made ``root / folder`` any directory on disk).
        """
        check_name(folder, "model folder", allow_subfolders=False)
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"model name must be relative and inside its folder: {name!r}")
        for directory in self.model_dirs(folder):
            candidate = directory / name
            if candidate.is_file() or candidate.is_dir():
                return candidate
        looked = ", ".join(str(d) for d in self.model_dirs(folder)) or "(no model roots configured)"
        raise FileNotFoundError(f"{folder}/{name} not found; looked in: {looked}")


def check_name(name: str, what: str = "name", *, allow_subfolders: bool = True) -> str:
    """``name`` if it is a relative path that stays where it is put; else ValueError naming ``what``.

    Refused: empty names, ``.`` / ``..`` parts, absolute paths (POSIX or drive/UNC), backslashes, NUL
    and other control characters; with ``allow_subfolders=False`` also any ``/``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    if any(ord(c) < 32 for c in name) or "\\" in name:
        raise ValueError(f"{what} {name!r} contains a control character or a backslash")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"{what} {name!r} must be relative, not an absolute path")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts) or (len(parts) > 1 and not allow_subfolders):
        what_ok = "a single name" if not allow_subfolders else "a relative path without '.' or '..' parts"
        raise ValueError(f"{what} {name!r} must be {what_ok}")
    return name


def safe_child(root: Path | str, name: str, what: str = "name", *, allow_subfolders: bool = True) -> Path:
    """``root / name`` for a user-supplied ``name`` (a run name, a file prefix, a subfolder), guaranteed
    to stay inside ``root``: the same rule as uploads (:func:`check_name`), then resolved, so a symlink
    inside ``root`` that points outside is refused too. Trainers, savers and anything that turns a
    node input into a path to write or delete must go through this.

    Raises:
        ValueError: naming ``what`` and ``name`` (never the absolute ``root``, which stays private).
    """
    check_name(name, what, allow_subfolders=allow_subfolders)
    base = Path(root).resolve()
    full = (base / name).resolve()
    if not full.is_relative_to(base) or full == base:
        raise ValueError(f"{what} {name!r} leaves its folder")
    return full


# Images are decoded only up to this many pixels (FEWSTEP_MAX_IMAGE_PIXELS overrides): a 15 kB PNG of
# 11000x11000 made LoadImage peak at 5.1 GB, and PIL by default only warns below 179 megapixels.
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than the budget (a decompression bomb, or just too big)."""


def max_image_pixels() -> int:
    """The pixel budget for decoding one image (read each time: no module state to reset in tests)."""
    try:
        return int(os.environ.get("FEWSTEP_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS))
    except ValueError:
        return DEFAULT_MAX_IMAGE_PIXELS


def open_image(source: str | os.PathLike[str] | Any, name: str | None = None) -> Any:
    """``PIL.Image.open(source)`` that refuses, before decoding, images over :func:`max_image_pixels`.

    Every image read from outside (``LoadImage``, uploads, ``/view`` previews) goes through this. The
    size comes from the header, so a bomb costs nothing. Use it as a context manager, like PIL's.

    Raises:
        ImageTooLarge: naming ``name`` (or the file's name) and its size.
    """
    from PIL import Image

    image = Image.open(source)
    width, height = image.size   # of the first frame, the one our readers decode
    if width * height > max_image_pixels():
        image.close()
        label = name or Path(str(getattr(source, "name", source))).name
        raise ImageTooLarge(f"image {label!r} is {width}x{height}, over the limit of {max_image_pixels():,} "
                            "pixels (FEWSTEP_MAX_IMAGE_PIXELS)")
    return image


def default_paths() -> Paths:
    """Paths from the environment: FEWSTEP_MODELS_DIRS (os.pathsep-separated), FEWSTEP_HOME (else cwd)."""
    home = Path(os.environ.get("FEWSTEP_HOME", "."))
    roots = [Path(p) for p in os.environ.get("FEWSTEP_MODELS_DIRS", "").split(os.pathsep) if p]
    return Paths(
        model_roots=tuple(roots) or (home / "models",),
        input_dir=home / "input", output_dir=home / "output", temp_dir=home / "temp", user_dir=home / "user",
    )


_PATHS: contextvars.ContextVar[Paths | None] = contextvars.ContextVar("fewstep_paths", default=None)


def current_paths() -> Paths:
    """The Paths of the app serving this request / running this node (set by the server and executor)."""
    return _PATHS.get() or default_paths()


@contextlib.contextmanager
def use_paths(paths: Paths) -> Iterator[Paths]:
    """Make ``paths`` current inside the block (the server and executor wrap their work in this)."""
    token = _PATHS.set(paths)
    try:
        yield paths
    finally:
        _PATHS.reset(token)
