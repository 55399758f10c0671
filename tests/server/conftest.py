"""Fixtures: a real registry with the test pack, and an app factory over a temporary home."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fewstep.app.config import Config
from fewstep.app.registry import load_registry
from fewstep.app.server import create_app, default_options

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PACKS = Path(__file__).parent / "packs"
GRAPHS = Path(__file__).parent / "graphs"


@pytest.fixture(scope="session")
def registry() -> Any:
    registry = load_registry([PACKS], entry_points=False, builtin=False)
    assert not registry.failures, registry.failures
    return registry


@pytest.fixture
def config(tmp_path: Path) -> Config:
    config = Config(home=tmp_path / "home", auth_token=None, cache="lru:16")
    config.ensure_dirs()
    return config


def make_engine(config: Config, registry: Any) -> tuple[Any, Any]:
    """The real executor (with its caches) and SQLite job store for ``config``."""
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.storage import JobStore

    return Executor(registry, CacheSet(config.cache), config.paths()), JobStore(config.db_path)


@pytest.fixture
def make_app(config: Config, registry: Any, tmp_path: Path) -> Callable[..., Any]:
    """``make_app(**option_overrides)`` -> a fresh app over the real engine (test pack only)."""

    def factory(config_: Config | None = None, **overrides: Any) -> Any:
        cfg = config_ or config
        executor, store = make_engine(cfg, registry)
        options = default_options(cfg)
        fields = {"graphs_dir": GRAPHS, **overrides}
        options = type(options)(**{**options.__dict__, **fields})
        return create_app(cfg, registry, executor, store, options=options)
    return factory


@pytest.fixture
async def client(aiohttp_client: Any, make_app: Callable[..., Any]) -> Any:
    return await aiohttp_client(make_app())
