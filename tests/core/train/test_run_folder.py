"""Trainer run folders stay inside <models>/checkpoints (issue #24 item 3): a run_name is user input, and the
checkpointer deletes older step_* files in its folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewstep.app.api import Paths, use_paths
from fewstep.nodes.core.train.distill_graph import run_folder


@pytest.mark.parametrize("kind", ["distill", "tdm", "r0", "pso"])
def test_a_plain_run_name_lands_under_the_checkpoints_folder(tmp_path: Path, kind: str) -> None:
    with use_paths(Paths(model_roots=(tmp_path,))):
        folder = run_folder("my run", ["a", "b"], kind=kind)
    assert folder.parent == (tmp_path / "checkpoints" / kind).resolve()
    assert folder.name.startswith("my run-") and len(folder.name) == len("my run-") + 10


@pytest.mark.parametrize("name", ["../../escape", "/tmp/elsewhere", "sub/dir", "a\\b", "nul\x00"])
def test_a_run_name_that_leaves_its_folder_is_refused(tmp_path: Path, name: str) -> None:
    with use_paths(Paths(model_roots=(tmp_path,))), pytest.raises(ValueError, match="run_name"):
        run_folder(name, ["x"])
    assert not any(tmp_path.rglob("*"))


def test_a_symlink_out_of_the_checkpoints_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    with use_paths(Paths(model_roots=(tmp_path / "models",))):
        target = run_folder("run", ["x"], kind="distill")
        target.parent.mkdir(parents=True)
        target.symlink_to(outside, target_is_directory=True)
        with pytest.raises(ValueError, match="run_name"):
            run_folder("run", ["x"], kind="distill")
