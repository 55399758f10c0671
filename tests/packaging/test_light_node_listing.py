"""Listing the nodes (``fewstep nodes``, the server's ``/object_info``) must not import torch: torch's import
alone takes about 2 s here, and the editor's first page load waits for the node list. Node modules import
their libraries (and torch) inside ``execute``; schemas use only the node API and light helpers."""

from __future__ import annotations

import json
import subprocess
import sys

# Loads every built-in pack's node classes through its entry point, builds each schema, and reports
# which heavy modules got imported on the way.
_PROBE = """
import json, sys
from importlib.metadata import entry_points
loaded = {}
for ep in entry_points(group="fewstep.nodes"):
    if not ep.value.startswith("fewstep."):
        continue
    for node in ep.load().entrypoint():
        node.define_schema() if hasattr(node, "define_schema") else None
    loaded[ep.name] = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print(json.dumps(loaded))
"""


def test_listing_builtin_nodes_imports_no_torch() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    heavy_after = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy_after, "no built-in pack found through the fewstep.nodes entry points"
    first_heavy = next(((pack, mods) for pack, mods in heavy_after.items() if mods), None)
    assert first_heavy is None, f"loading pack {first_heavy[0]!r} imported {first_heavy[1]} (import them in execute)"


def test_fewstep_nodes_lists_every_builtin_pack() -> None:
    out = subprocess.run([sys.executable, "-m", "fewstep", "nodes"], capture_output=True, text=True, timeout=120,
                         check=True)
    packs = {line.split()[0] for line in out.stdout.splitlines()[1:-1] if line.strip()}
    assert {"core", "mlcm", "slam", "tdm", "r0", "pso", "mixdq", "rewards"} <= packs
