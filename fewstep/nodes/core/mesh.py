"""The ``MESH`` value: triangle meshes, joints and articulated meshes, and SDF → mesh by marching cubes.

Plain tensors (no trimesh object) flow between nodes so packs need no mesh library; files are read and
written by :mod:`fewstep.nodes.core.mesh_io` (trimesh).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh.

    Args:
        vertices: float32 tensor [V, 3] (x, y, z; glTF's convention: +y up).
        faces: int64 tensor [F, 3] of vertex indices, counter-clockwise seen from outside (outward normals).
        vertex_colors: float tensor [V, 3] of RGB in [0, 1], or None.

    Equality is identity; compare tensors explicitly.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    vertex_colors: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check_matrix("vertices", self.vertices, (torch.float32,), "float32")
        _check_matrix("faces", self.faces, (torch.int64,), "int64")
        if self.faces.shape[0] and (int(self.faces.min()) < 0 or int(self.faces.max()) >= self.vertices.shape[0]):
            raise ValueError(f"Mesh faces index vertices 0..{self.vertices.shape[0] - 1}, "
                             f"got indices in [{int(self.faces.min())}, {int(self.faces.max())}]")
        if not bool(torch.isfinite(self.vertices).all()):
            raise ValueError("Mesh vertices must be finite (got NaN or inf)")
        if self.vertex_colors is not None:
            _check_matrix("vertex_colors", self.vertex_colors, (torch.float32, torch.float64, torch.float16), "float")
            if self.vertex_colors.shape[0] != self.vertices.shape[0]:
                raise ValueError(f"Mesh vertex_colors needs one colour per vertex: {self.vertices.shape[0]} "
                                 f"vertices, {self.vertex_colors.shape[0]} colours")
            low, high = float(self.vertex_colors.min()), float(self.vertex_colors.max())
            if not (low >= 0.0 and high <= 1.0):
                raise ValueError(f"Mesh vertex_colors must lie in [0, 1], got values in [{low}, {high}]")

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def triangles(self) -> torch.Tensor:
        """Corner positions [F, 3 corners, 3 coords]."""
        return self.vertices[self.faces]

    def area(self) -> float:
        """Surface area: Σ |(b − a) × (c − a)| / 2 over faces."""
        tri = self.triangles().double()
        return float(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=1).sum() / 2)

    def signed_volume(self) -> float:
        """Enclosed volume by the divergence theorem, Σ a · (b × c) / 6 over faces; positive for a closed mesh
        with outward normals, negative when its faces are wound inward."""
        tri = self.triangles().double()
        return float((tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2])).sum() / 6)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(min corner [3], max corner [3])."""
        return self.vertices.min(dim=0).values, self.vertices.max(dim=0).values

    def transformed(self, rotation: torch.Tensor, translation: torch.Tensor) -> Mesh:
        """x ↦ R x + t for rotation [3, 3] and translation [3]; colours and faces unchanged."""
        moved = self.vertices @ rotation.to(torch.float32).T + translation.to(torch.float32)
        return Mesh(moved.contiguous(), self.faces, self.vertex_colors)


def _check_matrix(name: str, value: object, dtypes: tuple[torch.dtype, ...], dtype_name: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"Mesh {name} must be a torch tensor [N, 3], got {type(value).__name__}")
    if value.ndim != 2 or value.shape[1] != 3:
        raise ValueError(f"Mesh {name} must have shape [N, 3], got {list(value.shape)}")
    if value.dtype not in dtypes:
        raise ValueError(f"Mesh {name} must be {dtype_name}, got {value.dtype}")
    if value.device.type != "cpu":
        raise ValueError(f"Mesh {name} must be on the CPU, got {value.device}")


Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Joint:
    """One joint between two parts.

    Args:
        name: unique within the articulated mesh.
        kind: "revolute" (rotation about ``axis`` through ``origin``) or "prismatic" (translation along
            ``axis``).
        axis: unit vector (|axis| = 1 within 1e-4).
        origin: a point on the axis line (meaningful for revolute joints).
        limits: (lower, upper) joint values, radians for revolute, length units for prismatic; lower <= upper.
        parent: the part that stays; child: the part that moves.
    """

    name: str
    kind: Literal["revolute", "prismatic"]
    axis: Vec3
    origin: Vec3
    limits: tuple[float, float]
    parent: str
    child: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Joint name must be a non-empty string")
        if self.kind not in ("revolute", "prismatic"):
            raise ValueError(f"Joint {self.name!r}: kind must be 'revolute' or 'prismatic', got {self.kind!r}")
        axis = _vec3(f"Joint {self.name!r} axis", self.axis)
        if abs(math.sqrt(sum(a * a for a in axis)) - 1.0) > 1e-4:
            raise ValueError(f"Joint {self.name!r}: axis must be a unit vector, got {axis} "
                             f"(length {math.sqrt(sum(a * a for a in axis)):.6f}; divide by its length)")
        object.__setattr__(self, "axis", axis)
        object.__setattr__(self, "origin", _vec3(f"Joint {self.name!r} origin", self.origin))
        if len(self.limits) != 2 or not all(math.isfinite(float(x)) for x in self.limits):
            raise ValueError(f"Joint {self.name!r}: limits must be two finite numbers (lower, upper), got {self.limits}")
        lower, upper = float(self.limits[0]), float(self.limits[1])
        if lower > upper:
            raise ValueError(f"Joint {self.name!r}: limits must be (lower, upper) with lower <= upper, got {self.limits}")
        object.__setattr__(self, "limits", (lower, upper))
        if self.parent == self.child:
            raise ValueError(f"Joint {self.name!r}: parent and child must differ, both are {self.parent!r}")

    def transform(self, value: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The child's rigid motion at joint value ``value`` as (R [3, 3], t [3]) with x ↦ R x + t.

        Revolute: Rodrigues' rotation by angle θ = value about the unit axis k through origin o,
        R = I + sin θ K + (1 − cos θ) K², t = o − R o (K the cross-product matrix of k).
        Prismatic: R = I, t = value · k."""
        k = torch.tensor(self.axis, dtype=torch.float64)
        if self.kind == "prismatic":
            return torch.eye(3, dtype=torch.float64), value * k
        cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
        rotation = torch.eye(3, dtype=torch.float64) + math.sin(value) * cross + (1 - math.cos(value)) * cross @ cross
        origin = torch.tensor(self.origin, dtype=torch.float64)
        return rotation, origin - rotation @ origin


def _vec3(what: str, value: object) -> Vec3:
    try:
        items = tuple(float(x) for x in value)  # type: ignore[union-attr]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be three numbers, got {value!r}") from error
    if len(items) != 3 or not all(math.isfinite(x) for x in items):
        raise ValueError(f"{what} must be three finite numbers, got {value!r}")
    return items  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class ArticulatedMesh:
    """Rigid parts linked by joints into a tree (each part is the child of at most one joint; one root).

    Args:
        parts: part name -> :class:`Mesh`, in the rest pose (all joint values 0), one world frame.
        joints: the joints; every parent and child names a part.
    """

    parts: Mapping[str, Mesh]
    joints: tuple[Joint, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.parts, Mapping) or not self.parts:
            raise ValueError("ArticulatedMesh needs at least one part (a mapping of name -> Mesh)")
        for name, part in self.parts.items():
            if not isinstance(part, Mesh):
                raise ValueError(f"ArticulatedMesh part {name!r} must be a Mesh, got {type(part).__name__}")
        object.__setattr__(self, "parts", MappingProxyType(dict(self.parts)))
        object.__setattr__(self, "joints", tuple(self.joints))
        _check_joint_tree(self.parts, self.joints)

    def __reduce__(self) -> tuple[type[ArticulatedMesh], tuple[dict[str, Mesh], tuple[Joint, ...]]]:
        """Pickle with a plain dict (the read-only mapping view itself cannot be pickled)."""
        return ArticulatedMesh, (dict(self.parts), self.joints)

    def root(self) -> str:
        """The one part that is no joint's child."""
        children = {joint.child for joint in self.joints}
        return next(name for name in self.parts if name not in children)

    def posed(self, values: Mapping[str, float]) -> dict[str, Mesh]:
        """Each part moved by the joint values (missing joints at 0), composing motions down the tree."""
        by_child = {joint.child: joint for joint in self.joints}
        world: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def motion(part: str) -> tuple[torch.Tensor, torch.Tensor]:
            if part not in world:
                joint = by_child.get(part)
                if joint is None:
                    world[part] = (torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
                else:  # the parent's motion after this joint's: x ↦ Rp (Rj x + tj) + tp
                    rot_p, t_p = motion(joint.parent)
                    rot_j, t_j = joint.transform(float(values.get(joint.name, 0.0)))
                    world[part] = (rot_p @ rot_j, rot_p @ t_j + t_p)
            return world[part]

        return {name: part.transformed(*motion(name)) for name, part in self.parts.items()}


def _check_joint_tree(parts: Mapping[str, Mesh], joints: tuple[Joint, ...]) -> None:
    names: set[str] = set()
    children: dict[str, str] = {}
    for joint in joints:
        if not isinstance(joint, Joint):
            raise ValueError(f"ArticulatedMesh joints must be Joint values, got {type(joint).__name__}")
        if joint.name in names:
            raise ValueError(f"ArticulatedMesh joint names must be unique; {joint.name!r} appears twice")
        names.add(joint.name)
        for role, part in (("parent", joint.parent), ("child", joint.child)):
            if part not in parts:
                raise ValueError(f"Joint {joint.name!r}: {role} {part!r} is not a part (parts: {sorted(parts)})")
        if joint.child in children:
            raise ValueError(f"Part {joint.child!r} is the child of two joints ({children[joint.child]!r}, "
                             f"{joint.name!r}); each part may hang from one joint")
        children[joint.child] = joint.name
    parent_of = {joint.child: joint.parent for joint in joints}
    for start in parent_of:
        seen, part = {start}, start
        while part in parent_of:
            part = parent_of[part]
            if part in seen:
                raise ValueError(f"ArticulatedMesh joints form a cycle through part {part!r}")
            seen.add(part)


def mesh_from_sdf_grid(
    sdf: torch.Tensor,
    bounds: tuple[float, float],
    colour_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Mesh:
    """The zero level set of a signed distance grid as a closed triangle mesh (scikit-image marching cubes,
    Lewiner et al. 2003).

    Args:
        sdf: [R, R, R] values, negative inside; ``sdf[i, j, k]`` is sampled at
            (x, y, z) = lo + (i, j, k) · (hi − lo) / (R − 1).
        bounds: (lo, hi) of the cube the grid spans, the same on every axis.
        colour_fn: vertex positions [N, 3] -> RGB [N, 3] (clamped to [0, 1]), or None for no colours.

    The grid is padded with one layer of "outside" so a surface cut by the grid's border is closed there
    (the mesh is always watertight), and faces are wound so normals point outward (positive volume).
    """
    grid = _check_sdf_grid(sdf, bounds)
    from skimage import measure

    lo, hi = float(bounds[0]), float(bounds[1])
    step = (hi - lo) / (grid.shape[0] - 1)
    # A far 'outside' value puts the closing cap within 1e-4 of a step from the border; clamping then lays
    # it on the border exactly.
    outside = 1e4 * max(float(np.abs(grid).max()), step)
    padded = np.pad(grid, 1, mode="constant", constant_values=outside)  # [R+2]^3
    # 'ascent': the object is where values are below the level (SDF < 0), so normals point up the gradient.
    verts, faces, _, _ = measure.marching_cubes(padded, level=0.0, spacing=(step, step, step),
                                                gradient_direction="ascent", allow_degenerate=False)
    vertices = torch.from_numpy(verts.astype(np.float32) + np.float32(lo - step)).clamp(lo, hi)  # undo the pad
    mesh = Mesh(vertices.contiguous(), torch.from_numpy(faces.astype(np.int64)))
    if mesh.signed_volume() < 0:  # guard: wind outward whatever the library's convention
        mesh = Mesh(mesh.vertices, mesh.faces.flip(1).contiguous())
    if colour_fn is None:
        return mesh
    return Mesh(mesh.vertices, mesh.faces, _vertex_colours(colour_fn, mesh.vertices))


def _check_sdf_grid(sdf: torch.Tensor, bounds: tuple[float, float]) -> np.ndarray:
    if not isinstance(sdf, torch.Tensor):
        raise ValueError(f"sdf must be a torch tensor [R, R, R], got {type(sdf).__name__}")
    if sdf.ndim != 3 or len(set(sdf.shape)) != 1 or sdf.shape[0] < 2:
        raise ValueError(f"sdf must be a cubic grid [R, R, R] with R >= 2, got {list(sdf.shape)}")
    if len(bounds) != 2 or not float(bounds[0]) < float(bounds[1]):
        raise ValueError(f"bounds must be (lo, hi) with lo < hi, got {bounds}")
    grid = sdf.detach().to("cpu", torch.float32).numpy()
    if not np.isfinite(grid).all():
        raise ValueError("sdf holds NaN or inf values")
    if grid.min() >= 0 or grid.max() <= 0:
        raise ValueError(f"sdf has no surface: its values lie in [{grid.min():.4g}, {grid.max():.4g}] and the "
                         "surface is where they cross 0 (negative inside, positive outside)")
    return grid


def _vertex_colours(colour_fn: Callable[[torch.Tensor], torch.Tensor], vertices: torch.Tensor) -> torch.Tensor:
    colours = colour_fn(vertices)
    if not isinstance(colours, torch.Tensor) or tuple(colours.shape) != tuple(vertices.shape):
        shape = list(colours.shape) if isinstance(colours, torch.Tensor) else type(colours).__name__
        raise ValueError(f"colour_fn must map positions [N, 3] to colours [N, 3], got {shape}")
    return colours.detach().to("cpu", torch.float32).clamp(0, 1).contiguous()
