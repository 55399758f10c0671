"""Analytic signed distance fields of simple solids sampled on a grid, and colourings for their meshes.

Exact Euclidean SDFs (negative inside); formulas after Quilez, "distance functions"
(iquilezles.org/articles/distfunctions). The grid spans [-1, 1]^3, +y up (glTF's convention).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fewstep.nodes.core.mesh import Mesh, mesh_from_sdf_grid
from fewstep.nodes.export.names import COLOURINGS

GRID_BOUNDS = (-1.0, 1.0)
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.2, 0.15), "green": (0.2, 0.7, 0.25), "blue": (0.2, 0.35, 0.85), "yellow": (0.9, 0.8, 0.2),
    "white": (0.92, 0.92, 0.92), "grey": (0.55, 0.55, 0.58),
}


def _sphere(p: torch.Tensor, size: float) -> torch.Tensor:
    return p.norm(dim=-1) - size


def _rounded_box(p: torch.Tensor, size: float) -> torch.Tensor:
    """Half extent 0.8·size with edges rounded by 0.1·size: |max(q, 0)| + min(max_i q_i, 0) − r,
    q = |p| − b + r."""
    radius = 0.1 * size
    q = p.abs() - 0.8 * size + radius
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0) - radius


def _torus(p: torch.Tensor, size: float) -> torch.Tensor:
    """Ring of radius 0.7·size in the xz plane, tube radius 0.3·size: |(|p_xz| − R, p_y)| − r."""
    ring = p[..., [0, 2]].norm(dim=-1) - 0.7 * size
    return torch.stack([ring, p[..., 1]], dim=-1).norm(dim=-1) - 0.3 * size


def _cylinder(p: torch.Tensor, size: float) -> torch.Tensor:
    """Radius 0.6·size, half height size, along y: d = (|p_xz| − r, |p_y| − h),
    min(max(d), 0) + |max(d, 0)|."""
    d = torch.stack([p[..., [0, 2]].norm(dim=-1) - 0.6 * size, p[..., 1].abs() - size], dim=-1)
    return d.max(dim=-1).values.clamp(max=0) + d.clamp(min=0).norm(dim=-1)


def _capsule(p: torch.Tensor, size: float) -> torch.Tensor:
    """Segment (0, ±0.6·size, 0) swept by radius 0.4·size: |p − (0, clamp(p_y), 0)| − r."""
    axis_point = torch.zeros_like(p)
    axis_point[..., 1] = p[..., 1].clamp(-0.6 * size, 0.6 * size)
    return (p - axis_point).norm(dim=-1) - 0.4 * size


SHAPES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "sphere": _sphere, "cube": _rounded_box, "torus": _torus, "cylinder": _cylinder, "capsule": _capsule,
}


def primitive_sdf(shape: str, resolution: int, size: float) -> torch.Tensor:
    """The SDF of ``shape`` at ``size`` (radius-like, in grid units) sampled on [R, R, R] over [-1, 1]^3."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    if not 0 < size <= 0.95:
        raise ValueError(f"size must be in (0, 0.95] so the solid fits the [-1, 1] grid, got {size}")
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8 samples per side, got {resolution}")
    axis = torch.linspace(*GRID_BOUNDS, resolution)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)   # [R, R, R, 3]
    return SHAPES[shape](points, size)


def colour_fn(colouring: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Positions [N, 3] -> RGB [N, 3]: one named colour, or ``position`` ((p + 1) / 2, a rainbow)."""
    if colouring == "position":
        return lambda points: ((points + 1) / 2).clamp(0, 1)
    if colouring not in COLOURS:
        raise ValueError(f"unknown colour {colouring!r}; choose one of {', '.join(COLOURINGS)}")
    rgb = torch.tensor(COLOURS[colouring])
    return lambda points: rgb.expand(points.shape[0], 3).clone()


def primitive_mesh(shape: str, resolution: int = 48, size: float = 0.6, colouring: str = "position") -> Mesh:
    """A closed, coloured triangle mesh of a primitive by marching cubes on its sampled SDF."""
    return mesh_from_sdf_grid(primitive_sdf(shape, resolution, size), GRID_BOUNDS, colour_fn(colouring))
