"""Output files written in the background (app.writes): complete files, embedded graphs, order, errors,
the next job overlapping a slow write while its events wait for the previous job's end, /view waiting."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import n
from PIL import Image

from fewstep.app.api import Int, Node, NodeOutput, Output, Paths, Schema, String, write_output
from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.registry import Registry
from fewstep.app.storage import JobStore
from fewstep.app.worker import QueueWorker
from fewstep.app.writes import OutputWriter, pending_path
from fewstep.nodes.core.image_io import encode_png, graph_from_png
from fewstep.nodes.core.nodes import SaveImage


class Gradient(Node):
    """IMAGE [B, H, W, 3]: a ramp plus the seed, so every seed gives different pixels."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="Gradient", inputs=[Int("seed", 0), Int("batch", 1)], outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, seed: int, batch: int) -> NodeOutput:
        ramp = torch.linspace(0, 1, 24 * 32 * 3).reshape(1, 24, 32, 3)
        images = torch.cat([(ramp + 0.1 * (seed + i)) % 1.0 for i in range(batch)])
        return NodeOutput(images)


class GatedWrite(Node):
    """Writes ``name`` through api.write_output; the write waits for GATES[name] (a test-controlled event)."""

    GATES: dict[str, threading.Event] = {}  # noqa: RUF012 - test-only switchboard, reset per test

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="GatedWrite", is_output_node=True, inputs=[String("name", "a.bin")], outputs=[])

    @classmethod
    def execute(cls, name: str) -> NodeOutput:
        from fewstep.app.api import current_paths

        gate = cls.GATES.get(name)

        def write(file):
            if gate is not None and not gate.wait(10):
                raise TimeoutError("gate never opened")
            file.write(name.encode())

        write_output(current_paths().output_dir / name, write)
        return NodeOutput(ui={"files": [name]})


@pytest.fixture
def executor(tmp_path: Path) -> Executor:
    registry = Registry()
    registry.register_pack("writes", [Gradient, SaveImage, GatedWrite])
    GatedWrite.GATES = {}
    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "output", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "input")
    return Executor(registry, CacheSet("lru:8"), paths)


def save_graph(seed: int = 0, batch: int = 1) -> dict:
    return {"1": n("Gradient", seed=seed, batch=batch), "2": n("SaveImage", images=["1", 0], filename_prefix="t")}


def test_encoder_gives_a_standard_png_with_text_chunks() -> None:
    rng = np.random.default_rng(0)
    for shape in ((17, 5, 3), (8, 9, 4), (6, 7, 1), (4, 3)):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        data = encode_png(pixels, {"prompt": '{"a": 1}', "workflow": "{}"})
        with Image.open(io.BytesIO(data)) as image:
            image.load()                               # decodes: CRCs and zlib stream checked by PIL
            assert image.text == {"prompt": '{"a": 1}', "workflow": "{}"}
            assert np.array_equal(np.asarray(image).reshape(pixels.shape), pixels)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))


def test_saved_files_are_complete_in_order_with_the_graph(executor: Executor) -> None:
    prompt = save_graph(batch=3)
    workflow = {"nodes": [{"id": 1}], "links": []}
    result = executor.execute(prompt, prompt_id="p", extra_data={"extra_pnginfo": {"workflow": workflow}})
    assert result.status == "success", result.error
    names = [item["filename"] for item in result.outputs["2"]["images"]]
    assert names == ["t_00001_.png", "t_00002_.png", "t_00003_.png"]
    folder = executor.paths.output_dir
    assert sorted(p.name for p in folder.iterdir()) == names            # no .part placeholder left
    expected = Gradient.execute(0, 3).values[0]
    for i, name in enumerate(names):                                    # file i holds image i
        pixels = np.asarray(Image.open(folder / name))
        assert np.array_equal(pixels, np.clip(255.0 * expected[i].numpy(), 0, 255).astype(np.uint8))
        assert graph_from_png(folder / name) == {"prompt": prompt, "workflow": workflow}   # drop-restore
    again = executor.execute(save_graph(seed=1), prompt_id="q")          # the counter skips written files
    assert again.outputs["2"]["images"][0]["filename"] == "t_00004_.png"


def test_a_failed_write_fails_the_job_names_the_file_and_is_not_cached(executor: Executor, monkeypatch) -> None:
    from fewstep.nodes.core import image_io

    def broken(array, text=None):
        raise OSError("disk full")

    monkeypatch.setattr(image_io, "encode_png", broken)
    events = []
    result = executor.execute(save_graph(), prompt_id="p", emit=lambda e, d: events.append((e, d)))
    assert result.status == "error"
    assert result.error["node_id"] == "2" and result.error["node_type"] == "SaveImage"
    assert "t_00001_.png" in result.error["exception_message"] and "disk full" in result.error["exception_message"]
    assert "2" not in result.outputs
    assert [e for e, _ in events][-1] == "execution_error"
    assert "execution_success" not in [e for e, _ in events]
    assert not list(executor.paths.output_dir.glob("*"))                # no placeholder, no half file
    monkeypatch.undo()
    retry = executor.execute(save_graph(), prompt_id="q")                # not served from the cache
    assert "2" in retry.executed and retry.status == "success", retry.error
    assert (executor.paths.output_dir / "t_00001_.png").is_file()


def test_the_failing_one_of_two_writers_is_reported(executor: Executor) -> None:
    (executor.paths.output_dir / "c.bin").mkdir(parents=True)          # a folder where c.bin goes
    (executor.paths.output_dir / "c.bin" / "x").write_text("x")
    result = executor.execute({"1": n("GatedWrite", name="b.bin"), "2": n("GatedWrite", name="c.bin")},
                              prompt_id="p")
    assert result.status == "error" and result.error["node_id"] == "2"
    assert "c.bin" in result.error["exception_message"]
    assert (executor.paths.output_dir / "b.bin").read_bytes() == b"b.bin"
    assert result.outputs == {"1": {"files": ["b.bin"]}}


def test_writer_keeps_order_and_ends_a_job_after_its_writes(tmp_path: Path) -> None:
    writer = OutputWriter()
    gate, order = threading.Event(), []
    first = tmp_path / "one.bin"
    writer.submit("p", "1", "X", first, lambda f: (gate.wait(5), order.append("one"), f.write(b"1")))
    assert pending_path(first).exists() and not first.exists()          # reserved, not yet written
    assert writer.pending(first) is not None
    writer.submit("p", "2", "X", tmp_path / "two.bin", lambda f: (order.append("two"), f.write(b"2")))
    ended = threading.Event()
    writer.when_done("p", lambda errors: (order.append(f"end {errors}"), ended.set()))
    time.sleep(0.05)
    assert order == []                                                  # the second waits for the first
    gate.set()
    assert ended.wait(5)
    assert order == ["one", "two", "end []"]
    assert first.read_bytes() == b"1" and not pending_path(first).exists() and writer.pending(first) is None
    called = []
    writer.when_done("nothing-pending", called.append)                  # nothing pending: called at once
    assert called == [[]]


def test_next_job_overlaps_a_slow_write_and_its_events_wait(executor: Executor, tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    events: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def emit(event, data, client):
        with lock:
            events.append((event, data))

    GatedWrite.GATES["slow.bin"] = threading.Event()
    worker = QueueWorker(store, executor, emit, idle_poll_s=0.05)
    store.enqueue("job1", {"1": n("GatedWrite", name="slow.bin")}, {}, None, "c")
    store.enqueue("job2", {"1": n("GatedWrite", name="fast.bin")}, {}, None, "c")
    worker.start()
    try:
        deadline = time.time() + 10
        while time.time() < deadline and "job2" not in executor.writer._jobs:   # job2's node has run
            time.sleep(0.01)
        assert "job2" in executor.writer._jobs, "job2 did not start while job1's file was being written"
        with lock:
            seen = [(e, d.get("prompt_id")) for e, d in events if isinstance(d, dict) and d.get("prompt_id")]
        assert ("execution_start", "job2") not in seen          # held until job1 has ended
        assert store.history_entry("job1") is None               # job1 not recorded before its file exists
        GatedWrite.GATES["slow.bin"].set()
        deadline = time.time() + 10
        while time.time() < deadline and store.history_entry("job2") is None:
            time.sleep(0.01)
    finally:
        worker.stop()
    assert (executor.paths.output_dir / "slow.bin").read_bytes() == b"slow.bin"
    with lock:
        ordered = [(e, d.get("prompt_id")) for e, d in events
                   if e in ("execution_start", "execution_success", "executing") and d.get("node") is None]
    assert ordered == [("execution_start", "job1"), ("execution_success", "job1"), ("executing", "job1"),
                       ("execution_start", "job2"), ("execution_success", "job2"), ("executing", "job2")]
    assert store.history_entry("job1")["status"]["status_str"] == "success"
