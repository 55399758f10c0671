"""Model-folder listings (``Paths.list_models``): order, filters, and the cache that follows directory changes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fewstep.app.api import Paths


def _age(*directories: Path, seconds: float = 60.0) -> None:
    """Backdate directories' mtimes so their listing counts as settled (cacheable)."""
    past = time.time() - seconds
    for directory in directories:
        os.utime(directory, (past, past))


def _tree(root: Path) -> Path:
    loras = root / "loras"
    (loras / "sub").mkdir(parents=True)
    for name in ("b.safetensors", "a.safetensors", "notes.txt", "sub/z.safetensors", "a.ckpt"):
        (loras / name).write_bytes(b"x")
    return loras


def test_lists_nested_files_in_path_order_with_suffix_filter_first_root_winning(tmp_path: Path) -> None:
    first, second = _tree(tmp_path / "one"), tmp_path / "two" / "loras"
    second.mkdir(parents=True)
    (second / "a.safetensors").write_bytes(b"y")
    (second / "c.safetensors").write_bytes(b"y")
    paths = Paths(model_roots=(first.parent, second.parent))
    assert paths.list_models("loras", (".safetensors",)) == [
        "a.safetensors", "b.safetensors", "sub/z.safetensors", "c.safetensors"]
    assert "notes.txt" in paths.list_models("loras")
    (first / "dangling.safetensors").symlink_to(first / "gone.safetensors")
    paths = Paths(model_roots=(first.parent, second.parent))
    assert "dangling.safetensors" not in paths.list_models("loras")   # a broken link is no model
    assert paths.list_models("checkpoints") == []          # a folder no root has


def test_settled_listing_is_cached_and_follows_added_and_removed_files(tmp_path: Path) -> None:
    loras = _tree(tmp_path)
    _age(loras, loras / "sub")
    paths = Paths(model_roots=(tmp_path,))
    before = paths.list_models("loras", (".safetensors",))
    # A file slipped in with the directory's mtime put back: only a cached listing can miss it.
    stamp = os.stat(loras)
    (loras / "hidden.safetensors").write_bytes(b"x")
    os.utime(loras, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert paths.list_models("loras", (".safetensors",)) == before
    # Real changes move the mtime of the directory that holds the file: the listing follows.
    (loras / "sub" / "new.safetensors").write_bytes(b"x")
    assert "sub/new.safetensors" in paths.list_models("loras", (".safetensors",))
    (loras / "b.safetensors").unlink()
    assert "b.safetensors" not in paths.list_models("loras", (".safetensors",))


def test_recently_changed_folder_is_scanned_every_time(tmp_path: Path) -> None:
    """Within one mtime tick a second change leaves the mtime unchanged: fresh folders are never cached."""
    loras = _tree(tmp_path)
    paths = Paths(model_roots=(tmp_path,))
    paths.list_models("loras")
    stamp = os.stat(loras)
    (loras / "same-tick.safetensors").write_bytes(b"x")
    os.utime(loras, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))   # as if the tick had not advanced
    assert "same-tick.safetensors" in paths.list_models("loras")


def test_a_root_created_later_is_noticed(tmp_path: Path) -> None:
    paths = Paths(model_roots=(tmp_path / "models",))
    assert paths.list_models("loras") == []
    _tree(tmp_path / "models")
    assert "a.safetensors" in paths.list_models("loras")
