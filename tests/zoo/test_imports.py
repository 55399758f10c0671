"""Loading every pack (what ``fewstep run`` and the server do at start) must not import the heavy
libraries: each costs seconds of CPU on a 2-core machine (diffusers ~10 s, transformers ~9 s, peft ~9 s,
scipy ~1.4 s, timm several s; torch itself ~2 s) and only model loaders / trainers / metrics that need them may import them,
inside the function that does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ["torch", "diffusers", "transformers", "peft", "scipy", "timm"]


@pytest.fixture(scope="module")
def loaded_after_registry() -> set[str]:
    code = ("import sys\nfrom fewstep.app.registry import load_registry\nr = load_registry()\n"
            "assert 'KSampler' in r.all(), 'core pack not loaded'\n"
            "print(' '.join(sorted(m for m in sys.modules if '.' not in m)))")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize("module", HEAVY)
def test_loading_packs_does_not_import(module: str, loaded_after_registry: set[str]) -> None:
    assert module not in loaded_after_registry
