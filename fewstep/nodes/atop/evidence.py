"""Motion evidence: clips of an articulated object moving through its joint range, rendered from several
known cameras (ATOP stage C's input; here rendered from the ground-truth joint instead of a video model).

Frame t of every clip shows the joint at θ_t = lo + (hi − lo) · t / (T − 1). Views are spread over the front
half of the object (azimuths from −spread/2 to +spread/2 about +z) at one elevation, so every part is seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fewstep.nodes.atop.objects import merge
from fewstep.nodes.core.mesh import ArticulatedMesh, Mesh
from fewstep.nodes.core.render.camera import Cameras, orbit_cameras
from fewstep.nodes.core.render.raster import SoftRasterSettings, lambert_shade, render_mesh

# σ = 0.05 px² draws practically hard edges (the silhouette blurs over ~0.4 px); γ = 1e-4 is a z-buffer
EVIDENCE_RASTER = SoftRasterSettings(sigma=0.05, gamma=1e-4, cull_backfaces=True)


@dataclass(frozen=True)
class EvidenceConfig:
    """Args: views and frames per view; image side in pixels; azimuth spread (degrees) of the views around
    the front; their elevation; camera distance; horizontal field of view (degrees)."""

    views: int = 3
    frames: int = 4
    size: int = 48
    spread: float = 120.0
    elevation: float = 30.0
    distance: float = 2.8
    fov: float = 40.0

    def __post_init__(self) -> None:
        if self.views < 1 or self.frames < 2 or self.size < 8:
            raise ValueError(f"motion evidence needs views >= 1, frames >= 2 and size >= 8, got {self}")

    def cameras(self) -> Cameras:
        """One camera per view, float32 on the CPU."""
        if self.views == 1:
            azimuths = [self.spread / 4]
        else:
            azimuths = [-self.spread / 2 + self.spread * i / (self.views - 1) for i in range(self.views)]
        return orbit_cameras(azimuths, self.elevation, self.distance, self.fov, self.size)


@dataclass(frozen=True, eq=False)
class MotionEvidence:
    """What the fit sees: RGB clips ``frames`` [V, T, H, W, 3], foreground ``masks`` [V, T, H, W] (1 = object),
    the ``cameras`` (V, known), and the ``background`` colour the clips were rendered over."""

    frames: torch.Tensor
    masks: torch.Tensor
    cameras: Cameras
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def views(self) -> int:
        return int(self.frames.shape[0])

    @property
    def steps(self) -> int:
        return int(self.frames.shape[1])

    def image_batch(self) -> torch.Tensor:
        """The clips as one IMAGE batch [V T, H, W, 3], view-major (view 0's frames first)."""
        return self.frames.reshape(-1, *self.frames.shape[2:])


def joint_values(mesh: ArticulatedMesh, frames: int) -> torch.Tensor:
    """θ_t [T] evenly through the first joint's limits."""
    lo, hi = mesh.joints[0].limits
    return torch.linspace(lo, hi, frames, dtype=torch.float64)


def render_states(meshes: list[Mesh], cameras: Cameras, settings: SoftRasterSettings = EVIDENCE_RASTER,
                  background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB [V, T, H, W, 3] and silhouettes [V, T, H, W] of T posed meshes (same topology) from V cameras."""
    v, t = len(cameras), len(meshes)
    verts = torch.stack([m.vertices for m in meshes])                                # [T, Vtx, 3]
    faces, colors = meshes[0].faces, meshes[0].vertex_colors
    per_image = verts[None].expand(v, *verts.shape).reshape(v * t, *verts.shape[1:])  # view-major
    cams = cameras.select(torch.arange(v).repeat_interleave(t))
    image = render_mesh(per_image, faces, cams, settings, colors, lambert_shade(per_image, faces), background)
    return image.rgb.reshape(v, t, *image.rgb.shape[1:]), image.alpha.reshape(v, t, *image.alpha.shape[1:])


def render_evidence(mesh: ArticulatedMesh, config: EvidenceConfig = EvidenceConfig()) -> MotionEvidence:
    """Clips of ``mesh``'s first joint sweeping its range, seen by ``config.cameras()``."""
    if not mesh.joints:
        raise ValueError("motion evidence needs an articulated mesh with a joint (this one has none)")
    joint = mesh.joints[0]
    states = [merge(list(mesh.posed({joint.name: float(value)}).values())) for value in joint_values(mesh, config.frames)]
    cameras = config.cameras()
    with torch.no_grad():
        rgb, alpha = render_states(states, cameras)
    return MotionEvidence(rgb.clamp(0, 1).contiguous(), alpha.contiguous(), cameras)
