"""Shared fixtures of the engine tests: registries built from the test packs, and a run helper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fewstep.app.api import Paths
from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.registry import Registry, load_registry

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PACKS = Path(__file__).parent / "packs"


@pytest.fixture(scope="session")
def registry() -> Registry:
    reg = load_registry([PACKS], entry_points=False, builtin=False)
    assert not reg.failures, reg.failures
    return reg


@pytest.fixture
def make_executor(registry, tmp_path):
    def make(policy: str = "lru:1000") -> Executor:
        paths = Paths(model_roots=(tmp_path / "models",), input_dir=tmp_path / "input",
                      output_dir=tmp_path / "output", temp_dir=tmp_path / "temp", user_dir=tmp_path / "user")
        return Executor(registry, CacheSet(policy), paths)
    return make
