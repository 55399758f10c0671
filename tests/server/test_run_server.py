"""``run_server(config)`` as ``fewstep serve`` calls it: a real process on a free port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_run_server_serves_editor_and_api_on_loopback(tmp_path: Path) -> None:
    port = _free_port()
    code = ("from pathlib import Path; from fewstep.app.config import Config; from fewstep.app.server import run_server; "
            f"run_server(Config(home=Path({str(tmp_path)!r}), port={port}, auth_token='tok', "
            f"custom_nodes_dirs=[Path({str(REPO / 'tests/server/packs')!r})]))")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                                                               "PYTHONPATH": str(REPO)})
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/object_info",
                                         headers={"Authorization": "Bearer tok"})
        deadline = time.monotonic() + 60
        while True:
            try:
                info = json.loads(urllib.request.urlopen(request, timeout=5).read())
                break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        assert "SolidImage" in info
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/object_info", timeout=5)
            raise AssertionError("request without the token was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        assert (tmp_path / "user" / "fewstep-queue.sqlite3").exists()
    finally:
        process.terminate()
        process.wait(10)
