"""Fixtures shared by several test folders. Nothing here is autouse and nothing imports torch at
collection time, so the engine and server tests stay torch-free."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded, restoring the setting after. The tensors of the toy and tiny-model
    tests are small: on a busy 2-core machine torch's thread pool spin-waits (measured 1.2 s vs 6 s per
    50 toy steps, and a 7 ms denoiser call 30x slower), and one thread is also deterministic."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_multiview_teacher():
    """A random camera-conditioned multi-view teacher (``nodes.zoo.multiview``) of the real architecture at toy
    width (text embeddings of 8); the zoo's teacher tests and the PRD tests use it."""
    import torch

    from fewstep.nodes.zoo.multiview.models import PRESETS, MVUNet, make_teacher

    torch.manual_seed(0)
    return make_teacher(MVUNet(PRESETS["test"]))


@pytest.fixture(scope="session")
def toy() -> Any:
    """The exact Gaussian-mixture teacher and a student that starts as the teacher (fewstep/nodes/core/train/toy.py)."""
    from fewstep.nodes.core.train.toy import toy_setup

    return toy_setup()


@pytest.fixture(scope="module")
def renders():
    """(IMAGE [8,64,64,3], scenes, captions) of 8 held-out procedural scenes (the reward tests' real images)."""
    import numpy as np
    import torch

    from fewstep.nodes.zoo import data

    scenes = data.make_split("heldout", 8, seed=0)
    images = torch.stack([torch.from_numpy(np.asarray(data.render(s), dtype=np.float32) / 255.0) for s in scenes])
    return images, scenes, [data.caption(s) for s in scenes]


@pytest.fixture(scope="session")
def pg_cluster() -> Any:
    """A throwaway PostgreSQL server for this session (tests/pg_cluster.py); skipped, saying why, only
    where no PostgreSQL server binaries are installed."""
    from pg_cluster import Cluster, server_binaries

    bin_dir = server_binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres) on this machine: "
                    "apt-get install postgresql (.ci/run does)")
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install 'fewstep[postgres]'")
    cluster = Cluster(bin_dir)
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def queue_url(request: Any, tmp_path: Any) -> Any:
    """The queue URL of a fresh, empty store of each backend: an SQLite file, a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.sqlite3'}"
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database()
    yield cluster.url(name)
    cluster.drop_database(name)
