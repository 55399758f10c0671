"""One import namespace: nothing of ours shadows another package, whatever folder Python starts in.

The repository root is on ``sys.path`` under ``python -m pytest`` and ``python -m fewstep`` run from a
checkout; a top-level ``kernels/`` there once hid Hugging Face's ``kernels`` (a transformers dependency)
and broke every diffusers import. These tests run a fresh interpreter in the repository root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fewstep import shipped_dir
from fewstep.app.cli import resolve_graph_path

REPO = Path(__file__).resolve().parents[2]
# The names ComfyUI's own modules and well-known libraries use: none may resolve into this repository.
FOREIGN_NAMES = ("kernels", "app", "nodes", "comfy", "comfy_extras", "server", "execution", "folder_paths",
                 "utils", "api", "frontend", "graphs", "models")


def _origins_from_repo_root(names: tuple[str, ...]) -> dict[str, str | None]:
    """Where each top-level name resolves in a fresh interpreter whose cwd (sys.path[0]) is the repo root."""
    code = ("import importlib.util, json, sys\n"
            "out = {}\n"
            f"for name in {list(names)!r}:\n"
            "    spec = importlib.util.find_spec(name)\n"
            "    out[name] = None if spec is None else (spec.origin or str(list(spec.submodule_search_locations or [])))\n"
            "print(json.dumps(out))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_no_top_level_name_of_others_resolves_into_the_repository() -> None:
    origins = _origins_from_repo_root(FOREIGN_NAMES)
    inside = {name: origin for name, origin in origins.items()
              if origin and str(REPO) in origin and "site-packages" not in origin}
    # graphs/ and frontend/ hold no Python: at most an empty namespace portion, never a module.
    assert set(inside) <= {"graphs", "frontend"}, inside
    for name in set(inside):
        assert not any((REPO / name).glob("*.py")), name


def test_hugging_face_kernels_is_importable_beside_us_when_installed() -> None:
    pytest.importorskip("kernels")
    done = subprocess.run([sys.executable, "-c", "import kernels, fewstep.kernels; print(kernels.__file__)"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "site-packages" in done.stdout and str(REPO / "fewstep") not in done.stdout


def test_shipped_data_is_found_from_the_package() -> None:
    assert (shipped_dir("graphs") / "default.json").is_file()
    assert (shipped_dir("frontend") / "fewstep.js").is_file()


def test_run_resolves_a_template_name_outside_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_graph_path(Path("graphs/default.json")) == shipped_dir("graphs") / "default.json"
    assert resolve_graph_path(Path("default.json")) == shipped_dir("graphs") / "default.json"
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "default.json").write_text("{}")  # a user's own file wins over the template
    assert resolve_graph_path(Path("graphs/default.json")) == Path("graphs/default.json")
    assert resolve_graph_path(Path("graphs/nope.json")) == Path("graphs/nope.json")
