"""``fewstep bench server``: the client process's websocket reader and one short real run."""

from __future__ import annotations

import socket
import struct

import pytest

from fewstep.bench.core import server as bench_server
from fewstep.bench.core.server import _Stream, _ws_frame


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | opcode, 127]) + struct.pack(">Q", n)
    return head + payload


def test_frames_of_every_length_encoding_and_pings_answered() -> None:
    ours, server = socket.socketpair()
    stream = _Stream.__new__(_Stream)
    stream.sock, stream.buffer = ours, b""
    big, huge = b"x" * 300, b"y" * 70_000
    server.sendall(_frame(0x9, b"hb") + _frame(0x1, b'{"a": 1}') + _frame(0x2, big) + _frame(0x1, huge))
    assert _ws_frame(stream) == (0x1, b'{"a": 1}')
    pong = server.recv(64)
    assert pong[0] == 0x8A and pong[1] == 0x80 | 2 and pong[6:] == b"hb"     # masked pong, same payload
    assert _ws_frame(stream) == (0x2, big)
    assert _ws_frame(stream) == (0x1, huge)
    server.sendall(bytes([0x01, 1]) + b"z")                                  # FIN bit clear: a fragment
    with pytest.raises(ConnectionError, match="fragmented"):
        _ws_frame(stream)
    ours.close()
    server.close()


def test_short_run_through_the_real_server_splits_the_overhead() -> None:
    result = bench_server.server_overhead(jobs=2, steps=1)
    assert result["server_nodes_ms_median"] > 0
    assert result["server_wall_ms_median"] > result["server_nodes_ms_median"]
    parts = sum(result[f"of_which_{k}_ms_median"] for k in ("until_execute", "executor", "after_execute"))
    # per job the three parts add up to wall - nodes exactly; the median of 2 jobs is their mean, so the
    # medians add up too (each is rounded to 1 us)
    assert abs(parts - result["server_beyond_nodes_ms_median"]) < 0.005


def test_failed_jobs_give_an_error_not_a_table(monkeypatch, tmp_path, capsys) -> None:
    from fewstep.nodes.core.nodes import SaveImage

    def broken(cls, **inputs):
        raise RuntimeError("the student loader is missing its package")

    monkeypatch.setattr(SaveImage, "execute", classmethod(broken))
    assert bench_server.main(["--jobs", "1", "--steps", "1", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "no figures" in captured.err and "student loader is missing" in captured.err
    assert "|" not in captured.out and not (tmp_path / "bench_server.json").exists()
    with pytest.raises(bench_server.BenchJobFailed, match="student loader"):
        bench_server.executor_overhead(jobs=1, steps=1)
