"""The on-disk preview cache under concurrent requests: every request for one image gets its preview, the
cache keeps one entry, and a half-written or foreign file in the cache folder is never served."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from fewstep.app.server import files

WRITERS = 8


def _png_file(folder: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 10)).save(buffer, format="PNG")
    path = folder / "a.png"
    path.write_bytes(buffer.getvalue())
    return path


def test_concurrent_writers_of_one_preview_all_answer_and_leave_one_entry(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    image, cache = _png_file(tmp_path), tmp_path / "cache"
    everyone_converted = threading.Barrier(WRITERS)
    real = files._preview

    def convert_then_wait(*args: object) -> tuple[bytes, str] | None:
        converted = real(*args)
        everyone_converted.wait(timeout=10)   # all writers store at the same moment
        return converted

    real_replace = os.replace

    def slow_replace(source: object, target: object) -> None:
        time.sleep(0.02)   # widen the window between a writer's write and its rename
        real_replace(source, target)

    monkeypatch.setattr(files, "_preview", convert_then_wait)
    monkeypatch.setattr(os, "replace", slow_replace)
    answers: list[tuple[bytes, str] | None] = []
    failures: list[BaseException] = []

    def request() -> None:
        try:
            answers.append(files._cached_preview(image, "webp;50", "rgba", cache))
        except BaseException as exc:   # noqa: BLE001 - the assertion below names it
            failures.append(exc)

    threads = [threading.Thread(target=request) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    assert len(answers) == WRITERS and all(a is not None and a[1] == "image/webp" for a in answers)
    assert len({a[0] for a in answers if a is not None}) == 1
    assert sorted(p.suffix for p in cache.iterdir()) == [".webp"]   # one entry, no temporary left behind


def test_a_partial_file_in_the_cache_is_never_served(tmp_path: Path) -> None:
    image, cache = _png_file(tmp_path), tmp_path / "cache"
    cache.mkdir()
    key = files._preview_key(image, "webp;50", "rgba")
    (cache / f"{key}.part").write_bytes(b"half a file")
    (cache / f".writing-{key}.part").write_bytes(b"another half")
    data, media_type = files._cached_preview(image, "webp;50", "rgba", cache) or (b"", "")
    assert media_type == "image/webp" and data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    # a second request is served from the entry just written, byte for byte
    assert files._cached_preview(image, "webp;50", "rgba", cache) == (data, media_type)
