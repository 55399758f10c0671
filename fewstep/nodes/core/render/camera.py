"""Pinhole cameras placed by azimuth, elevation and distance around a target (look-at), intrinsics from a
field of view.

Conventions (world: glTF's, +y up):

- camera frame: x right, y down, z forward (OpenCV); a point at camera depth z > 0 is in front;
- pixel (u, v): u = f x / z + W / 2, v = f y / z + H / 2, so pixel ``[row i, column j]`` has its centre at
  (u, v) = (j + 0.5, i + 0.5) and the optical axis passes through the image centre;
- focal length in pixels from the horizontal field of view: f = (W / 2) / tan(fov / 2);
- orbit: the eye sits at target + d (cos e sin a, sin e, cos e cos a) for azimuth a (about +y, 0 = on +z)
  and elevation e (up from the xz plane).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class Cameras:
    """N pinhole cameras of one image size.

    Args:
        rotation: [N, 3, 3] world → camera rotation (rows: right, down, forward in world coordinates).
        eye: [N, 3] camera centres in world coordinates.
        focal: [N] focal lengths in pixels (square pixels, principal point at the image centre).
        width / height: image size in pixels.
    """

    rotation: torch.Tensor
    eye: torch.Tensor
    focal: torch.Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        n = self.eye.shape[0] if self.eye.ndim == 2 else -1
        if self.rotation.shape != (n, 3, 3) or self.eye.shape != (n, 3) or self.focal.shape != (n,):
            raise ValueError(f"Cameras need rotation [N,3,3], eye [N,3], focal [N]; got {list(self.rotation.shape)}, "
                             f"{list(self.eye.shape)}, {list(self.focal.shape)}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"Cameras need a positive image size, got {self.width} x {self.height}")

    def __len__(self) -> int:
        return int(self.eye.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Cameras:
        """The same cameras with tensors moved / cast."""
        return Cameras(self.rotation.to(device, dtype), self.eye.to(device, dtype), self.focal.to(device, dtype),
                       self.width, self.height)

    def select(self, index: torch.Tensor | Sequence[int]) -> Cameras:
        """The cameras at ``index`` (e.g. ``repeat_interleave`` indices to pair each camera with several frames)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.eye.device)
        return Cameras(self.rotation[idx], self.eye[idx], self.focal[idx], self.width, self.height)

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """Points [N, M, 3] (or [M, 3], shared by every camera) in world → [N, M, 3] in each camera's frame."""
        points = points.expand(len(self), *points.shape[-2:]) if points.ndim == 2 else points
        return torch.einsum("nij,nmj->nmi", self.rotation, points - self.eye[:, None, :])

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel coordinates [N, M, 2] (u, v) and camera depth z [N, M] of world points [N, M, 3] or [M, 3].

        Points at z <= 0 get meaningless (u, v); callers mask them by depth."""
        cam = self.world_to_camera(points)                                    # [N, M, 3]
        z = cam[..., 2]
        safe = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
        f = self.focal[:, None, None]
        centre = cam.new_tensor([self.width / 2, self.height / 2])
        return f * cam[..., :2] / safe[..., None] + centre, z

    def pixel_centres(self) -> torch.Tensor:
        """(u, v) of every pixel centre, [H * W, 2], row-major (row i, column j → index i W + j)."""
        v, u = torch.meshgrid(torch.arange(self.height, device=self.eye.device, dtype=self.eye.dtype) + 0.5,
                              torch.arange(self.width, device=self.eye.device, dtype=self.eye.dtype) + 0.5,
                              indexing="ij")
        return torch.stack([u, v], dim=-1).reshape(-1, 2)

    def rays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rays through every pixel centre: origins [N, H W, 3], unit directions [N, H W, 3] and, per ray, the
        camera depth gained per unit length along it, cos [N, H W] (depth z = t · cos for a point at distance t)."""
        uv = self.pixel_centres()                                             # [P, 2]
        centre = uv.new_tensor([self.width / 2, self.height / 2])
        xy = (uv[None] - centre) / self.focal[:, None, None]                  # [N, P, 2]
        local = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)         # [N, P, 3], z = 1
        local = local / local.norm(dim=-1, keepdim=True)
        dirs = torch.einsum("nji,npj->npi", self.rotation, local)             # R^T · d: camera → world
        origins = self.eye[:, None, :].expand_as(dirs)
        return origins, dirs, local[..., 2]


def focal_from_fov(fov_degrees: float, width: int) -> float:
    """Focal length in pixels for a horizontal field of view: f = (W / 2) / tan(fov / 2)."""
    if not 0.0 < fov_degrees < 180.0:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_degrees}")
    return (width / 2) / math.tan(math.radians(fov_degrees) / 2)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: Sequence[float] = (0.0, 1.0, 0.0)) -> torch.Tensor:
    """World → camera rotations [N, 3, 3] for eyes [N, 3] looking at targets [N, 3] (x right, y down, z forward).

    forward = (target − eye) / |·|, right = forward × up / |·|, down = forward × right."""
    forward = target - eye
    forward = forward / forward.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    up_t = forward.new_tensor(up).expand_as(forward)
    right = torch.linalg.cross(forward, up_t)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6                     # looking straight up or down
    right = torch.where(degenerate, torch.linalg.cross(forward, forward.new_tensor([0.0, 0.0, -1.0]).expand_as(forward)), right)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right)
    return torch.stack([right, down, forward], dim=-2)


def orbit_eye(azimuth_degrees: float, elevation_degrees: float, distance: float) -> tuple[float, float, float]:
    """Offset of the eye from the target: d (cos e sin a, sin e, cos e cos a)."""
    a, e = math.radians(azimuth_degrees), math.radians(elevation_degrees)
    return (distance * math.cos(e) * math.sin(a), distance * math.sin(e), distance * math.cos(e) * math.cos(a))


def orbit_cameras(azimuths: Sequence[float], elevations: Sequence[float] | float, distance: float, fov_degrees: float,
                  size: int | tuple[int, int], target: Sequence[float] = (0.0, 0.0, 0.0),
                  dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Cameras:
    """Cameras on a sphere around ``target``, one per azimuth (degrees), looking at it.

    Args:
        azimuths: degrees about +y (0 = on the +z side, 90 = on +x).
        elevations: degrees above the xz plane, one per azimuth or one for all.
        distance: eye–target distance (> 0).
        fov_degrees: horizontal field of view.
        size: image side in pixels, or (width, height).
    """
    if distance <= 0:
        raise ValueError(f"camera distance must be positive, got {distance}")
    elevs = [float(elevations)] * len(azimuths) if isinstance(elevations, (int, float)) else list(elevations)
    if len(elevs) != len(azimuths) or not azimuths:
        raise ValueError(f"need one elevation per azimuth (or one for all): {len(azimuths)} azimuths, {len(elevs)} elevations")
    width, height = (size, size) if isinstance(size, int) else size
    centre = torch.tensor(target, dtype=dtype, device=device)
    eye = centre + torch.tensor([orbit_eye(a, e, distance) for a, e in zip(azimuths, elevs, strict=True)], dtype=dtype, device=device)
    rotation = look_at(eye, centre.expand_as(eye))
    focal = torch.full((len(azimuths),), focal_from_fov(fov_degrees, width), dtype=dtype, device=device)
    return Cameras(rotation, eye, focal, width, height)
