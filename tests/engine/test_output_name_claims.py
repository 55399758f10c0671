"""Output names claimed across processes: two saves that scanned the folder at the same moment (two workers of
``fewstep serve --workers 2``) get different files, and a claim leaves nothing behind once written."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewstep.app.api import release_output, reserve_output, write_output
from fewstep.app.writes import pending_path
from fewstep.nodes.core import image_io
from fewstep.nodes.core import nodes as core_nodes
from fewstep.nodes.core.image_io import claim_output_names, next_output_path


def test_a_claimed_name_is_refused_to_the_next_claimer(tmp_path: Path) -> None:
    first, second = tmp_path / "a_00001_.png", tmp_path / "a_00002_.png"
    assert reserve_output([first, second])
    assert not reserve_output([second])                      # already claimed by the first call
    assert pending_path(first).exists() and pending_path(second).exists()
    (tmp_path / "b_00001_.png").write_bytes(b"done")
    assert not reserve_output([tmp_path / "b_00002_.png", tmp_path / "b_00001_.png"])   # the file exists
    assert not pending_path(tmp_path / "b_00002_.png").exists()   # a refused call leaves no claim behind


def test_a_save_that_read_the_same_counter_takes_the_next_one(tmp_path: Path) -> None:
    def names(counter: int) -> list[str]:
        return [f"img_{counter + i:05}_.png" for i in range(2)]

    scanned = next_output_path(tmp_path, "img")[3]
    assert claim_output_names(tmp_path, scanned, names) == 1
    assert claim_output_names(tmp_path, scanned, names) == 3   # 1 and 2 belong to the first batch
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"img_{i:05}_.png.part" for i in (1, 2, 3, 4)]


def test_write_output_fills_the_claim_and_release_drops_one(tmp_path: Path) -> None:
    target = tmp_path / "x_00001_.bin"
    assert reserve_output([target])
    write_output(target, lambda file: file.write(b"payload"))          # outside a job: written now
    assert target.read_bytes() == b"payload" and not pending_path(target).exists()
    other = tmp_path / "x_00002_.bin"
    assert reserve_output([other])
    other.write_bytes(b"own writer")
    release_output(other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_00001_.bin", "x_00002_.bin"]


def test_two_saves_that_scanned_together_write_two_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both saves read the folder before either writes (a barrier after the scan, as two worker processes at
    the same moment): before the claim they picked one counter and one image replaced the other."""
    barrier = threading.Barrier(2, timeout=20)

    def scan_then_wait(folder: Path, prefix: str) -> tuple[Path, str, str, int]:
        found = next_output_path(folder, prefix)
        barrier.wait()
        return found

    monkeypatch.setattr(image_io, "next_output_path", scan_then_wait)
    results: list[dict] = []

    def save(value: float) -> None:
        results.append(core_nodes._save(torch.full((1, 4, 4, 3), value), tmp_path, "race", "output", None, None))

    threads = [threading.Thread(target=save, args=(v,)) for v in (0.2, 0.8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    names = sorted(r["images"][0]["filename"] for r in results)
    assert names == ["race_00001_.png", "race_00002_.png"]
    pixels = sorted(int(np.asarray(Image.open(tmp_path / name))[0, 0, 0]) for name in names)
    assert pixels == [51, 204] and not list(tmp_path.glob("*.part"))
