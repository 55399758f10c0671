"""fewstep: a ComfyUI-compatible node-graph studio for few-step generation.

One import namespace: the engine (``fewstep.app``), the node packs (``fewstep.nodes``), the GPU kernels
(``fewstep.kernels``), the experiments (``fewstep.bench``) and the shipped data (``fewstep.graphs``,
``fewstep.frontend``). Importing this package imports nothing else.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def shipped_dir(name: str) -> Path:
    """A data folder shipped with fewstep (``graphs`` or ``frontend``).

    An installed wheel holds it inside the package (``fewstep/graphs``); a source checkout (editable
    install, or ``python -m`` from the repo root) keeps it at the repository's top level.
    """
    package = Path(__file__).resolve().parent
    inside = package / name
    return inside if inside.is_dir() else package.parent / name
