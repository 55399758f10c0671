"""/view of a file a job has named but is still writing (app.writes): it waits for the rename."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from fewstep.app.writes import pending_path


async def test_view_waits_for_a_pending_write_and_404s_without_one(client: Any, config: Any) -> None:
    folder = config.paths().output_dir
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "img_00001_.png"
    part = pending_path(target)
    part.write_bytes(b"")                                # reserved by a save node, not yet written

    async def finish_later() -> None:
        await asyncio.sleep(0.2)
        part.write_bytes(b"complete file")
        os.replace(part, target)

    started = time.monotonic()
    writer = asyncio.create_task(finish_later())
    response = await client.get("/api/view?filename=img_00001_.png&type=output")
    await writer
    assert response.status == 200
    assert await response.read() == b"complete file"
    assert time.monotonic() - started >= 0.2             # it waited instead of answering 404
    missing = await client.get("/api/view?filename=img_00002_.png&type=output")
    assert missing.status == 404                         # no placeholder: not found at once
