"""Caches of a running app: node outputs, loaded models, and classic node instances.

Output cache
    Entries are keyed by a content address (see :func:`node_key`): class, schema version, constant inputs
    (tensors fingerprinted by their bytes), the fingerprint hook's value, the node id for not-idempotent
    nodes, and the keys of the linked ancestors. So identical subgraphs share results across graphs, and
    changing the seed re-runs only what depends on it. Policies (switchable at run time, see
    :func:`parse_policy`):

    ``none``      nothing is kept between jobs (each job still keeps its own outputs while it runs);
    ``run``       results live for one job: identical nodes inside the job share, all dropped at its end;
    ``lru:N``     the N most recently used entries are kept across jobs;
    ``ram:GB``    entries kept until their CPU tensors exceed GB; least recently used dropped first;
    ``vram:GB``   GPU tensors stay on the GPU until they exceed GB; least recently used entries move to
                  (pinned) CPU memory, then are dropped once CPU bytes exceed the RAM budget (``ram:GB``
                  in the same policy, e.g. ``vram:6,ram:16``; default 4 GB). Policies combine with commas.

    A moved entry goes back to its original device when it is used again.

Model cache
    Loaded weights by (file, size, mtime, dtype, device); node packs reach it through
    ``app.api.cached_model(path, dtype, device, loader)`` (which uses the running job's cache) or through
    ``current_context().extra["model_cache"]``. Under a VRAM budget the least recently used models are
    moved to the CPU (``.to("cpu")``) and moved back on their next use.

Tensors are recognised by duck typing (``nbytes`` + ``device``) so this module never imports torch.
"""

from __future__ import annotations

import gc
import hashlib
import math
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GB = 1024**3
DEFAULT_RAM_BUDGET_GB = 4.0
_SCALARS = (int, float, str, bool, bytes, type(None))


# ---------------------------------------------------------------------------------------------
# Content fingerprints
# ---------------------------------------------------------------------------------------------


def _tensor_digest(value: Any) -> str | None:
    """``dtype shape:hash`` of a torch tensor or numpy array's content, None for other objects."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        return f"T{value.dtype}{tuple(value.shape)}:{hashlib.blake2b(data, digest_size=16).hexdigest()}"
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        data = numpy.ascontiguousarray(value).tobytes()
        return f"N{value.dtype}{value.shape}:{hashlib.blake2b(data, digest_size=16).hexdigest()}"
    return None


def encode_value(value: Any) -> str:
    """A canonical string of a constant: equal strings mean equal values.

    Scalars (and complex numbers), lists, tuples, sets and dicts are spelled out (sets and dicts in sorted
    order); tensors and arrays by dtype, shape and a hash of their bytes. Any other object cannot be compared by content and gets a fresh nonce, so a node fed such
    a constant never hits the cache (stated here rather than guessed silently).
    """
    kind = type(value)
    if kind in _SCALARS:
        return repr(value)
    if kind is list or kind is tuple:
        inner = ",".join(encode_value(v) for v in value)
        return f"[{inner}]" if kind is list else f"({inner})"
    if isinstance(value, Mapping):
        items = sorted((encode_value(k), encode_value(v)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if kind is set or kind is frozenset:
        return "<" + ",".join(sorted(encode_value(v) for v in value)) + ">"
    if kind is complex or value is Ellipsis:
        return repr(value)
    digest = _tensor_digest(value)
    if digest is not None:
        return digest
    return f"?{uuid.uuid4().hex}"


def fingerprint_part(value: Any) -> str:
    """The fingerprint hook's value as a key part; NaN (or a failure, passed as NaN) means 'always re-run'."""
    if isinstance(value, float) and math.isnan(value):
        return f"!{uuid.uuid4().hex}"
    return encode_value(value)


def node_key(parts: list[str]) -> str:
    """Hash of the already-encoded parts of a node's signature (128-bit blake2b, hex)."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


# ---------------------------------------------------------------------------------------------
# Sizes and device moves
# ---------------------------------------------------------------------------------------------


def _is_tensor(value: Any) -> bool:
    return isinstance(getattr(value, "nbytes", None), int) and hasattr(getattr(value, "device", None), "type")


def measure(value: Any) -> tuple[int, int]:
    """``(cpu_bytes, gpu_bytes)`` of the tensors inside nested lists / tuples / dicts."""
    cpu = gpu = 0
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is list or kind is tuple:
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif _is_tensor(item):
            if item.device.type == "cpu":
                cpu += item.nbytes
            else:
                gpu += item.nbytes
        elif isinstance(getattr(item, "nbytes", None), int):  # numpy arrays
            cpu += item.nbytes
    return cpu, gpu


def move(value: Any, device: str, only_from_gpu: bool = False) -> Any:
    """A copy of nested containers with every tensor moved to ``device``."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list or kind is tuple:
        return kind(move(v, device, only_from_gpu) for v in value)
    if isinstance(value, dict):
        return {k: move(v, device, only_from_gpu) for k, v in value.items()}
    if _is_tensor(value) and not (only_from_gpu and value.device.type == "cpu"):
        moved = value.to(device)
        if device == "cpu" and value.device.type == "cuda":
            try:
                moved = moved.pin_memory()  # faster copy back to the GPU
            except Exception:  # pinning is an optimisation only
                pass
        return moved
    return value


# ---------------------------------------------------------------------------------------------
# Policies and the output cache
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A parsed output-cache policy."""

    text: str
    keep: bool                     # keep entries across jobs
    store: bool                    # store at all
    max_entries: int | None = None
    ram_bytes: float | None = None
    vram_bytes: float | None = None


def parse_policy(text: str) -> Policy:
    """``none`` | ``run`` | ``lru:N`` | ``ram:GB`` | ``vram:GB`` (``vram:X,ram:Y`` combines). ValueError if bad."""
    text = text.strip().lower().replace(" ", ":")
    if text == "none":
        return Policy(text, keep=False, store=False)
    if text == "run":
        return Policy(text, keep=False, store=True)
    fields: dict[str, float] = {}
    for part in text.split(","):
        name, _, number = part.partition(":")
        if name not in ("lru", "ram", "vram") or not number:
            raise ValueError(f"bad cache policy {text!r}: use none, run, lru:N, ram:GB or vram:GB")
        try:
            fields[name] = float(number)
        except ValueError:
            raise ValueError(f"bad cache policy {text!r}: {number!r} is not a number") from None
        if fields[name] < 0:
            raise ValueError(f"bad cache policy {text!r}: sizes must be >= 0")
    # lru:N alone counted entries, not bytes (64 big tensors kept 1.4 GB): it gets the RAM budget too
    ram = fields.get("ram", DEFAULT_RAM_BUDGET_GB if "vram" in fields or "lru" in fields else None)
    return Policy(text, keep=True, store=True,
                  max_entries=int(fields["lru"]) if "lru" in fields else None,
                  ram_bytes=ram * GB if ram is not None else None,
                  vram_bytes=fields["vram"] * GB if "vram" in fields else None)


@dataclass
class CacheEntry:
    """One node's cached result: per-output lists of items, and its UI dict."""

    outputs: list[list[Any]]
    ui: dict[str, Any] | None = None
    cpu_bytes: int = 0
    gpu_bytes: int = 0
    moved_from: str | None = None   # the GPU device the entry came from, while it sits on the CPU


class OutputCache:
    """Content-addressed node outputs under a :class:`Policy`. Not thread-safe: CacheSet locks it."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.cpu_bytes = 0
        self.gpu_bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CacheEntry | None:
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        if entry.moved_from is not None:
            self._account(entry, -1)
            entry.outputs = move(entry.outputs, entry.moved_from)
            entry.cpu_bytes, entry.gpu_bytes = measure(entry.outputs)
            entry.moved_from = None
            self._account(entry, +1)
            self.trim(protect=key)
        return entry

    def put(self, key: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> None:
        if not self.policy.store:
            return
        old = self.entries.pop(key, None)
        if old is not None:
            self._account(old, -1)
        cpu, gpu = measure(outputs)   # always: /system_stats reports what is really kept
        entry = CacheEntry(outputs, ui, cpu, gpu)
        self.entries[key] = entry
        self._account(entry, +1)
        self.trim(protect=key)

    def _account(self, entry: CacheEntry, sign: int) -> None:
        self.cpu_bytes += sign * entry.cpu_bytes
        self.gpu_bytes += sign * entry.gpu_bytes

    def _drop(self, key: str) -> None:
        self._account(self.entries.pop(key), -1)

    def trim(self, protect: str | None = None) -> None:
        """Apply the limits: entry count, then VRAM (move to CPU), then RAM (drop), oldest first."""
        policy = self.policy
        if policy.max_entries is not None:
            while len(self.entries) > policy.max_entries:
                self._drop(next(iter(self.entries)))
        if policy.vram_bytes is not None:
            for key in [k for k, e in self.entries.items() if e.gpu_bytes and k != protect]:
                if self.gpu_bytes <= policy.vram_bytes:
                    break
                self._offload(key)
        if policy.ram_bytes is not None:
            for key in [k for k in self.entries if k != protect]:
                if self.cpu_bytes <= policy.ram_bytes:
                    break
                self._drop(key)

    def _offload(self, key: str) -> None:
        entry = self.entries[key]
        self._account(entry, -1)
        device = _first_gpu_device(entry.outputs)
        try:
            entry.outputs = move(entry.outputs, "cpu", only_from_gpu=True)
        except Exception:  # cannot move: drop instead
            self.entries.pop(key)
            return
        entry.moved_from = device
        entry.cpu_bytes, entry.gpu_bytes = measure(entry.outputs)
        self._account(entry, +1)

    def clear(self) -> int:
        n = len(self.entries)
        self.entries.clear()
        self.cpu_bytes = self.gpu_bytes = 0
        return n


def _first_gpu_device(value: Any) -> str:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif _is_tensor(item) and item.device.type != "cpu":
            return str(item.device)
    return "cuda"


# ---------------------------------------------------------------------------------------------
# Model cache
# ---------------------------------------------------------------------------------------------


def _model_bytes(model: Any) -> tuple[int, int]:
    """``(cpu, gpu)`` bytes of a torch module's parameters and buffers, else of its tensors."""
    params = getattr(model, "parameters", None)
    if callable(params):
        cpu = gpu = 0
        tensors = list(params()) + list(model.buffers()) if callable(getattr(model, "buffers", None)) else []
        for tensor in tensors:
            if tensor.device.type == "cpu":
                cpu += tensor.nbytes
            else:
                gpu += tensor.nbytes
        return cpu, gpu
    return measure(model)


@dataclass
class _Model:
    value: Any
    device: str
    cpu_bytes: int = 0
    gpu_bytes: int = 0
    offloaded: bool = False


class ModelCache:
    """Loaded models keyed by (file, size, mtime, dtype, device); thread-safe.

    Args:
        max_models: at most this many models stay loaded (least recently used unloaded first).
        vram_bytes: when set, least recently used models on a GPU move to the CPU to stay under it.
    """

    def __init__(self, max_models: int = 16, vram_bytes: float | None = None) -> None:
        self.max_models = max_models
        self.vram_bytes = vram_bytes
        self._models: OrderedDict[tuple[Any, ...], _Model] = OrderedDict()
        self._lock = threading.RLock()

    @staticmethod
    def key(path: str | Path, dtype: Any, device: Any) -> tuple[Any, ...]:
        """The cache key: the resolved file (its size and mtime, so a replaced file reloads), dtype, device."""
        resolved = Path(path).resolve()
        try:
            stat = resolved.stat()
            stamp: tuple[int, int] = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            stamp = (-1, -1)
        return (str(resolved), *stamp, str(dtype), str(device))

    def get_or_load(self, path: str | Path, dtype: Any, device: Any, loader: Callable[[], Any]) -> Any:
        """The cached model, or ``loader()``'s result stored under the key."""
        key = self.key(path, dtype, device)
        with self._lock:
            found = self._models.get(key)
            if found is not None:
                self._models.move_to_end(key)
                if found.offloaded:
                    found.value = found.value.to(found.device)
                    found.offloaded = False
                    found.cpu_bytes, found.gpu_bytes = _model_bytes(found.value)
                    self._fit(protect=key)
                return found.value
        value = loader()  # outside the lock: loading may take seconds
        with self._lock:
            cpu, gpu = _model_bytes(value)
            self._models[key] = _Model(value, str(device), cpu, gpu)
            self._fit(protect=key)
        return value

    def _fit(self, protect: tuple[Any, ...]) -> None:
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)
        if self.vram_bytes is None:
            return
        for key, model in list(self._models.items()):
            if sum(m.gpu_bytes for m in self._models.values()) <= self.vram_bytes:
                break
            if key != protect and model.gpu_bytes and callable(getattr(model.value, "to", None)):
                model.value = model.value.to("cpu")
                model.offloaded = True
                model.cpu_bytes, model.gpu_bytes = _model_bytes(model.value)

    def clear(self) -> int:
        with self._lock:
            n = len(self._models)
            self._models.clear()
            return n

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"models": len(self._models), "ram_bytes": sum(m.cpu_bytes for m in self._models.values()),
                    "vram_bytes": sum(m.gpu_bytes for m in self._models.values()),
                    "offloaded": sum(m.offloaded for m in self._models.values())}


# ---------------------------------------------------------------------------------------------
# The set the executor and server share
# ---------------------------------------------------------------------------------------------


class CacheSet:
    """Output cache + model cache + classic node instances, with one lock; policies switchable at run time.

    Args:
        policy: output-cache policy string (see module docstring).
        models: the model cache (a new one by default).
    """

    def __init__(self, policy: str = "lru:64", models: ModelCache | None = None) -> None:
        self._lock = threading.RLock()
        self.outputs = OutputCache(parse_policy(policy))
        self.models = models or ModelCache()
        self.objects: dict[tuple[str, str], Any] = {}

    @property
    def policy(self) -> str:
        return self.outputs.policy.text

    def set_policy(self, policy: str) -> None:
        """Switch the output-cache policy now; kept entries are trimmed to the new limits."""
        parsed = parse_policy(policy)
        with self._lock:
            self.outputs.policy = parsed
            if not parsed.store:
                self.outputs.clear()
            elif parsed.ram_bytes or parsed.vram_bytes:
                for entry in self.outputs.entries.values():
                    entry.cpu_bytes, entry.gpu_bytes = measure(entry.outputs)
                self.outputs.cpu_bytes = sum(e.cpu_bytes for e in self.outputs.entries.values())
                self.outputs.gpu_bytes = sum(e.gpu_bytes for e in self.outputs.entries.values())
            self.outputs.trim()

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            return self.outputs.get(key)

    def held(self, keys: dict[str, str]) -> set[str]:
        """The names in ``{name: key}`` whose key has an entry, under one lock; unlike :meth:`get` nothing
        moves (no LRU touch, no GPU restore)."""
        with self._lock:
            entries = self.outputs.entries
            return {name for name, key in keys.items() if key in entries}

    def put(self, key: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> None:
        with self._lock:
            self.outputs.put(key, outputs, ui)

    def forget(self, key: str) -> None:
        """Drop one output entry (a node whose files failed to write must run again next time)."""
        with self._lock:
            if key in self.outputs.entries:
                self.outputs._drop(key)

    def end_job(self) -> None:
        """Called after each job: the ``run`` policy forgets everything."""
        with self._lock:
            if not self.outputs.policy.keep:
                self.outputs.clear()

    def free_outputs(self) -> int:
        """Drop every cached output and node instance; returns the number of outputs dropped."""
        with self._lock:
            self.objects.clear()
            return self.outputs.clear()

    def free(self, unload_models: bool, free_memory: bool) -> None:
        """``/free``: drop cached outputs (free_memory) and/or loaded models (unload_models)."""
        if free_memory:
            self.free_outputs()
        if unload_models:
            self.models.clear()
        if free_memory or unload_models:
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()

    def stats(self) -> dict[str, Any]:
        """Sizes for ``/system_stats``."""
        with self._lock:
            out = self.outputs
            return {"policy": out.policy.text, "entries": len(out.entries), "ram_bytes": out.cpu_bytes,
                    "vram_bytes": out.gpu_bytes, "hits": out.hits, "misses": out.misses,
                    "objects": len(self.objects), "models": self.models.stats()}
