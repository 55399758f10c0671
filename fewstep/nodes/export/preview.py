"""A small shaded view of a mesh for previews and thumbnails: orthographic camera, flat Lambert shading,
back-face culling and the painter's algorithm (faces drawn far to near with Pillow), 2x supersampled.

Not a renderer for training (no gradients, no exact visibility for interpenetrating faces): it shows what
a mesh looks like, fast, with numpy and Pillow only. Measured: a 7,500-face sphere at 256x256 in ~0.1 s.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from fewstep.nodes.core.mesh import ArticulatedMesh, Mesh

BACKGROUND = (32, 32, 36)
BASE_COLOUR = (0.75, 0.75, 0.78)   # faces of a mesh without vertex colours
SUPERSAMPLE = 2


def merge_parts(mesh: Mesh | ArticulatedMesh) -> Mesh:
    """One mesh: an articulated mesh's parts in the rest pose joined (colours kept where every part has them)."""
    if isinstance(mesh, Mesh):
        return mesh
    import torch

    parts = list(mesh.parts.values())
    offsets = np.cumsum([0] + [part.num_vertices for part in parts[:-1]])
    faces = torch.cat([part.faces + int(offset) for part, offset in zip(parts, offsets, strict=True)])
    colours = None
    if all(part.vertex_colors is not None for part in parts):
        colours = torch.cat([part.vertex_colors.float() for part in parts])  # type: ignore[union-attr]
    return Mesh(torch.cat([part.vertices for part in parts]).contiguous(), faces.contiguous(), colours)


def view_rotation(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """World -> camera rotation [3, 3] of a camera on a sphere around the origin looking at it (+y up, the
    camera looks down -z in its frame). Azimuth turns about +y from +z, elevation lifts toward +y."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    forward = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])  # to camera
    right = np.cross([0.0, 1.0, 0.0], forward)
    right /= np.linalg.norm(right) if np.linalg.norm(right) > 1e-9 else 1.0
    up = np.cross(forward, right)
    return np.stack([right, up, forward])


def render_mesh(mesh: Mesh | ArticulatedMesh, width: int = 256, height: int = 256, *, azimuth: float = 35.0,
                elevation: float = 25.0, background: tuple[int, int, int] = BACKGROUND, margin: float = 0.08,
                mode: str = "shaded") -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [H, W, 3], coverage mask float32 [H, W] in 0..1) of the mesh, fitted to the frame.

    ``mode`` shaded: colour · (0.25 + 0.75 · max(0, n · l)) with a light from the upper left behind the
    camera; normal: the camera-space face normal as (n + 1) / 2."""
    if mode not in ("shaded", "normal"):
        raise ValueError(f"mode must be shaded or normal, got {mode!r}")
    if width < 1 or height < 1:
        raise ValueError(f"render size must be at least 1x1, got {width}x{height}")
    merged = merge_parts(mesh)
    scale_w, scale_h = width * SUPERSAMPLE, height * SUPERSAMPLE
    canvas = Image.new("RGB", (scale_w, scale_h), background)
    mask = Image.new("L", (scale_w, scale_h), 0)
    if merged.num_faces:
        _draw_faces(merged, view_rotation(azimuth, elevation), canvas, mask, margin, mode)
    rgb = np.asarray(canvas.resize((width, height), Image.Resampling.BOX))
    cover = np.asarray(mask.resize((width, height), Image.Resampling.BOX), dtype=np.float32) / 255.0
    return rgb, cover


def _draw_faces(mesh: Mesh, rotation: np.ndarray, canvas: Image.Image, mask: Image.Image, margin: float,
                mode: str) -> None:
    vertices = mesh.vertices.double().numpy() @ rotation.T               # camera frame [V, 3]
    triangles = vertices[mesh.faces.numpy()]                             # [F, 3, 3]
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    visible = (normals[:, 2] > 0) & (lengths > 0)                         # facing the camera (+z)
    if not visible.any():
        return
    normals = normals[visible] / lengths[visible, None]
    triangles = triangles[visible]
    light = np.array([-0.4, 0.6, 0.7]) / np.linalg.norm([-0.4, 0.6, 0.7])
    shade = 0.25 + 0.75 * np.clip(normals @ light, 0.0, 1.0)             # [F']
    if mesh.vertex_colors is not None:
        base = mesh.vertex_colors.double().numpy()[mesh.faces.numpy()[visible]].mean(axis=1)
    else:
        base = np.broadcast_to(np.array(BASE_COLOUR), (len(triangles), 3))
    colours = np.clip(base * shade[:, None] * 255, 0, 255).astype(np.uint8)
    if mode == "normal":
        colours = np.clip((normals + 1) / 2 * 255, 0, 255).astype(np.uint8)
    # fit the visible extent into the frame, keeping aspect
    xy = triangles[..., :2]
    low, high = vertices[:, :2].min(axis=0), vertices[:, :2].max(axis=0)
    span = max(float((high - low).max()), 1e-9)
    size = np.array(canvas.size, dtype=np.float64)
    scale = float((size * (1 - 2 * margin)).min()) / span
    centre = (low + high) / 2
    pixels = (xy - centre) * scale * np.array([1.0, -1.0]) + size / 2    # image y points down
    order = np.argsort(triangles[..., 2].mean(axis=1))                   # far (small z) first
    draw, draw_mask = ImageDraw.Draw(canvas), ImageDraw.Draw(mask)
    for index in order:
        polygon = [tuple(point) for point in pixels[index]]
        draw.polygon(polygon, fill=tuple(int(c) for c in colours[index]))
        draw_mask.polygon(polygon, fill=255)
