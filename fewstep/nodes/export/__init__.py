"""Video and mesh export and import as nodes: SaveVideo / LoadVideo / CreateVideo (PyAV, Pillow), SaveGLB /
mesh files (trimesh), previews for the editor. Library modules beside ``nodes``."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.export.nodes import NODES

    return list(NODES)
