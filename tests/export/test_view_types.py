"""/view serves the files the export nodes write with their media types (the editor plays <video> from it
and its 3D viewer fetches GLB), whether or not the host has a mime.types file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fewstep.app.config import Config
from fewstep.app.registry import load_registry
from fewstep.app.server import create_app, default_options

os.environ.setdefault("HF_HUB_OFFLINE", "1")
EXPECTED = {"clip.mp4": "video/mp4", "clip.webm": "video/webm", "clip.gif": "image/gif", "clip.webp": "image/webp",
            "mesh/m.glb": "model/gltf-binary", "mesh/m.obj": "model/obj"}


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> Any:
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.storage import JobStore

    config = Config(home=tmp_path / "home", auth_token=None, cache="lru:4")
    config.ensure_dirs()
    registry = load_registry([], entry_points=False, builtin=False)
    executor = Executor(registry, CacheSet(config.cache), config.paths())
    app = create_app(config, registry, executor, JobStore(config.db_path), options=default_options(config))
    for name in EXPECTED:
        target = config.paths().output_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"\x00" * 16)
    return await aiohttp_client(app)


async def test_view_sends_media_types(client: Any) -> None:
    for name, media_type in EXPECTED.items():
        subfolder, _, filename = name.rpartition("/")
        response = await client.get(f"/api/view?filename={filename}&type=output&subfolder={subfolder}")
        assert response.status == 200, name
        assert response.headers["Content-Type"] == media_type, name
        assert await response.read() == b"\x00" * 16
    escape = await client.get("/api/view?filename=passwd&type=output&subfolder=../../../etc")
    assert escape.status in (400, 403, 404)
