"""Procedural articulated objects with known joints: a box with a hinged lid, a cabinet with a drawer, a
cabinet with a door. Each is an :class:`ArticulatedMesh` of two parts ("body" and the moving part) and one
joint whose type, axis, origin and range are the ground truth the fit is scored against.

Sizes, colours and a yaw of the whole object about +y are drawn from the seed, so the joint axis is not
always axis-aligned. Boxes carry 4 vertices per face so every face keeps its own flat colour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from fewstep.nodes.core.mesh import ArticulatedMesh, Joint, Mesh

Vec3 = tuple[float, float, float]

# face name -> (axis, side, the 4 corner sign patterns in counter-clockwise order seen from outside)
_FACES: dict[str, tuple[int, int, tuple[tuple[int, int, int], ...]]] = {
    "-x": (0, -1, ((-1, -1, -1), (-1, -1, 1), (-1, 1, 1), (-1, 1, -1))),
    "+x": (0, 1, ((1, -1, -1), (1, 1, -1), (1, 1, 1), (1, -1, 1))),
    "-y": (1, -1, ((-1, -1, -1), (1, -1, -1), (1, -1, 1), (-1, -1, 1))),
    "+y": (1, 1, ((-1, 1, -1), (-1, 1, 1), (1, 1, 1), (1, 1, -1))),
    "-z": (2, -1, ((-1, -1, -1), (-1, 1, -1), (1, 1, -1), (1, -1, -1))),
    "+z": (2, 1, ((-1, -1, 1), (1, -1, 1), (1, 1, 1), (-1, 1, 1))),
}


def box(lo: Vec3, hi: Vec3, color: Vec3, skip: Sequence[str] = (), face_colors: dict[str, Vec3] | None = None) -> Mesh:
    """An axis-aligned box [lo, hi] as quads (4 vertices, 2 triangles per face, outward winding), without the
    faces named in ``skip`` (an open box, whose walls then get inner faces too, wound the other way, so its
    inside is a surface seen from the front: back-face culling stays exact); ``face_colors`` overrides the
    colour of named faces."""
    if not all(a < b for a, b in zip(lo, hi, strict=True)):
        raise ValueError(f"box needs lo < hi on every axis, got lo={lo}, hi={hi}")
    centre = [(a + b) / 2 for a, b in zip(lo, hi, strict=True)]
    half = [(b - a) / 2 for a, b in zip(lo, hi, strict=True)]
    verts, faces, colors = [], [], []
    for name, (_, _, corners) in _FACES.items():
        if name in skip:
            continue
        base = len(verts)
        verts += [[centre[k] + s[k] * half[k] for k in range(3)] for s in corners]
        faces += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
        if skip:
            faces += [[base, base + 2, base + 1], [base, base + 3, base + 2]]
        colors += [list((face_colors or {}).get(name, color))] * 4
    return Mesh(torch.tensor(verts, dtype=torch.float32), torch.tensor(faces, dtype=torch.int64),
                torch.tensor(colors, dtype=torch.float32))


def merge(meshes: Sequence[Mesh]) -> Mesh:
    """One mesh of several (vertices concatenated, faces re-indexed; every input must carry colours)."""
    offsets = torch.cumsum(torch.tensor([0] + [m.num_vertices for m in meshes[:-1]]), 0)
    return Mesh(torch.cat([m.vertices for m in meshes]), torch.cat([m.faces + o for m, o in zip(meshes, offsets, strict=True)]),
                torch.cat([m.vertex_colors for m in meshes]))  # type: ignore[misc]


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _jitter(gen: torch.Generator, color: Vec3, amount: float = 0.08) -> Vec3:
    return tuple(min(1.0, max(0.0, c + _uniform(gen, -amount, amount))) for c in color)  # type: ignore[return-value]


def _box_with_lid(gen: torch.Generator) -> tuple[dict[str, Mesh], Joint]:
    """An open box and a lid hinged on its back top edge (revolute about −x: positive angles open upward)."""
    w, h, d, t = _uniform(gen, 0.8, 1.1), _uniform(gen, 0.35, 0.55), _uniform(gen, 0.55, 0.8), 0.06
    y0 = -(h + t) / 2                                  # centre the closed object on the origin
    body = box((-w / 2, y0, -d / 2), (w / 2, y0 + h, d / 2), _jitter(gen, (0.72, 0.55, 0.35)), skip=("+y",))
    lid = box((-w / 2, y0 + h, -d / 2), (w / 2, y0 + h + t, d / 2), _jitter(gen, (0.25, 0.45, 0.8)),
              face_colors={"+z": _jitter(gen, (0.9, 0.8, 0.2))})
    limit = math.radians(_uniform(gen, 70.0, 100.0))
    joint = Joint("lid_hinge", "revolute", (-1.0, 0.0, 0.0), (0.0, y0 + h, -d / 2), (0.0, limit), "body", "lid")
    return {"body": body, "lid": lid}, joint


def _drawer(gen: torch.Generator) -> tuple[dict[str, Mesh], Joint]:
    """A cabinet open at the front and a drawer sliding out along +z (prismatic)."""
    w, h, d, g = _uniform(gen, 0.8, 1.1), _uniform(gen, 0.4, 0.6), _uniform(gen, 0.6, 0.9), 0.04
    body = box((-w / 2, -h / 2, -d / 2), (w / 2, h / 2, d / 2), _jitter(gen, (0.55, 0.6, 0.62)), skip=("+z",))
    drawer = box((-w / 2 + g, -h / 2 + g, -d / 2 + g), (w / 2 - g, h / 2 - g, d / 2), _jitter(gen, (0.8, 0.35, 0.25)),
                 skip=("+y",), face_colors={"+z": _jitter(gen, (0.95, 0.75, 0.3))})
    limit = _uniform(gen, 0.5, 0.7) * d
    joint = Joint("drawer_slide", "prismatic", (0.0, 0.0, 1.0), (0.0, 0.0, d / 2), (0.0, limit), "body", "drawer")
    return {"body": body, "drawer": drawer}, joint


def _door(gen: torch.Generator) -> tuple[dict[str, Mesh], Joint]:
    """A cabinet open at the front and a door hinged on its left edge (revolute about −y: opens outward)."""
    w, h, d, t = _uniform(gen, 0.6, 0.9), _uniform(gen, 0.8, 1.1), _uniform(gen, 0.45, 0.65), 0.05
    z0 = -t / 2
    body = box((-w / 2, -h / 2, -d / 2 + z0), (w / 2, h / 2, d / 2 + z0), _jitter(gen, (0.45, 0.62, 0.4)), skip=("+z",))
    door = box((-w / 2, -h / 2, d / 2 + z0), (w / 2, h / 2, d / 2 + z0 + t), _jitter(gen, (0.85, 0.45, 0.55)),
               face_colors={"+z": _jitter(gen, (0.95, 0.9, 0.6))})
    limit = math.radians(_uniform(gen, 70.0, 100.0))
    joint = Joint("door_hinge", "revolute", (0.0, -1.0, 0.0), (-w / 2, 0.0, d / 2 + z0 + t / 2), (0.0, limit), "body", "door")
    return {"body": body, "door": door}, joint


OBJECTS: dict[str, Callable[[torch.Generator], tuple[dict[str, Mesh], Joint]]] = {
    "box_lid": _box_with_lid,
    "drawer": _drawer,
    "door": _door,
}


def yaw_matrix(degrees: float) -> torch.Tensor:
    """Rotation [3, 3] (float64) about +y."""
    a = math.radians(degrees)
    return torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]],
                        dtype=torch.float64)


def make_object(kind: str, seed: int, max_yaw_degrees: float = 30.0) -> ArticulatedMesh:
    """A procedural articulated object of ``kind`` (``box_lid``, ``drawer``, ``door``), rotated by a random yaw
    in [−max_yaw, max_yaw] about +y (parts, axis and origin alike)."""
    if kind not in OBJECTS:
        raise ValueError(f"unknown articulated object {kind!r}; choose one of {sorted(OBJECTS)}")
    gen = torch.Generator().manual_seed(int(seed))
    parts, joint = OBJECTS[kind](gen)
    rotation = yaw_matrix(_uniform(gen, -max_yaw_degrees, max_yaw_degrees))
    moved = {name: mesh.transformed(rotation, torch.zeros(3)) for name, mesh in parts.items()}
    axis = tuple(float(x) for x in rotation @ torch.tensor(joint.axis, dtype=torch.float64))
    origin = tuple(float(x) for x in rotation @ torch.tensor(joint.origin, dtype=torch.float64))
    turned = Joint(joint.name, joint.kind, axis, origin, joint.limits, joint.parent, joint.child)  # type: ignore[arg-type]
    return ArticulatedMesh(moved, (turned,))


def object_size(mesh: ArticulatedMesh) -> float:
    """Diagonal of the rest pose's bounding box (the unit of the origin error)."""
    verts = torch.cat([part.vertices for part in mesh.parts.values()])
    return float((verts.max(0).values - verts.min(0).values).norm())
