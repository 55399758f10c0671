"""Every module of the experiments tree imports: a stale import after a move fails here. (That nothing at
run time imports ``fewstep.bench`` is tests/packaging/test_import_contracts.py's.)"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import fewstep.bench


def bench_modules() -> list[str]:
    """Every module and package under ``fewstep.bench`` (pkgutil walk; folders need an ``__init__.py``)."""
    walked = pkgutil.walk_packages(fewstep.bench.__path__, prefix="fewstep.bench.", onerror=_raise)
    return sorted(info.name for info in walked)


def _raise(name: str) -> None:
    raise ImportError(f"walking {name} failed")


def test_the_walk_sees_the_whole_tree() -> None:
    folders = {p.parent for p in Path(fewstep.bench.__path__[0]).rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(str(f) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"folders of bench/ with code but no __init__.py (pkgutil skips them): {missing}"
    assert "fewstep.bench.engine" in bench_modules()


@pytest.mark.parametrize("name", bench_modules())
def test_bench_module_imports(name: str) -> None:
    importlib.import_module(name)

