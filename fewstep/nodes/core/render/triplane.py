"""Triplane fields (EG3D, Chan et al. 2022 §3): three axis-aligned feature planes [3, C, R, R] — xy, xz, yz —
sampled bilinearly at a point's projections and decoded by a small MLP into SDF and colour.

For p = (x, y, z) in [-bound, bound]³, with planes P_xy, P_xz, P_yz (row index = second coordinate):

    f(p) = concat(P_xy(x, y), P_xz(x, z), P_yz(y, z))  ∈ R^{3C},
    (d̃, c̃) = MLP(f(p)),   sdf(p) = d̃ + (|p| − r₀),   rgb(p) = sigmoid(c̃),

the |p| − r₀ term (optional, r₀ = ``sphere_radius``) being the usual geometric initialisation: an untrained
decoder already describes a sphere, so rendering starts from a surface (IGR/SAL's sphere init in spirit).
Planes may carry a batch dimension [B, 3, C, R, R]: object b is seen by cameras b·V ... b·V + V − 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# which two coordinates index each plane: (column axis, row axis)
PLANE_AXES = ((0, 1), (0, 2), (1, 2))


def sample_triplane(planes: torch.Tensor, points: torch.Tensor, bound: float) -> torch.Tensor:
    """Bilinear features [B, M, 3C] of points [B, M, 3] from planes [B, 3, C, R, R] (the three planes'
    features concatenated in xy, xz, yz order). Points outside the cube read the border (padding 'border')."""
    if planes.ndim != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be [B, 3, C, R, R], got {list(planes.shape)}")
    b, _, c, r, _ = planes.shape
    if points.shape[0] != b or points.shape[-1] != 3:
        raise ValueError(f"points must be [B, M, 3] with B = {b}, got {list(points.shape)}")
    uv = points / bound                                                             # [B, M, 3] in [-1, 1]
    grids = torch.stack([uv[..., list(axes)] for axes in PLANE_AXES], dim=1)        # [B, 3, M, 2]
    feats = F.grid_sample(planes.reshape(b * 3, c, r, r), grids.reshape(b * 3, 1, -1, 2), mode="bilinear",
                          padding_mode="border", align_corners=True)                # [B 3, C, 1, M]
    return feats.reshape(b, 3, c, -1).permute(0, 3, 1, 2).reshape(b, -1, 3 * c)


@dataclass(frozen=True)
class TriplaneDecoderConfig:
    """Args: channels C per plane; hidden width; hidden layers; sphere_radius r₀ of the SDF prior (0 = none)."""

    channels: int = 8
    hidden: int = 64
    layers: int = 2
    sphere_radius: float = 0.5


class TriplaneDecoder(nn.Module):
    """MLP 3C → hidden (softplus) ×layers → 4: SDF residual and colour logits (module docstring)."""

    def __init__(self, config: TriplaneDecoderConfig = TriplaneDecoderConfig()) -> None:
        super().__init__()
        self.config = config
        widths = [3 * config.channels] + [config.hidden] * config.layers
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.Softplus(beta=10.0)]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], 4))

    def forward(self, features: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sdf [..., M], rgb [..., M, 3]) from features [..., M, 3C] at points [..., M, 3]."""
        out = self.net(features)
        sdf = out[..., 0]
        if self.config.sphere_radius > 0:
            sdf = sdf + points.norm(dim=-1) - self.config.sphere_radius
        return sdf, torch.sigmoid(out[..., 1:])


@dataclass(frozen=True, eq=False)
class Triplane:
    """The ``TRIPLANE`` value: feature planes, the decoder that reads them, and the cube they span.

    Args:
        planes: [3, C, R, R] or [B, 3, C, R, R] (xy, xz, yz; row = second coordinate, column = first).
        decoder: features [..., 3C] and points → (sdf, rgb).
        bound: the planes span [-bound, bound] on each axis.
    """

    planes: torch.Tensor
    decoder: TriplaneDecoder
    bound: float = 1.0

    def __post_init__(self) -> None:
        if self.planes.ndim not in (4, 5) or self.planes.shape[-4] != 3 or self.planes.shape[-1] != self.planes.shape[-2]:
            raise ValueError(f"Triplane planes must be [3, C, R, R] or [B, 3, C, R, R], got {list(self.planes.shape)}")
        if self.planes.shape[-3] != self.decoder.config.channels:
            raise ValueError(f"Triplane planes have {self.planes.shape[-3]} channels but the decoder reads "
                             f"{self.decoder.config.channels}")
        if self.bound <= 0:
            raise ValueError(f"Triplane bound must be positive, got {self.bound}")

    @property
    def batch(self) -> int:
        return 1 if self.planes.ndim == 4 else int(self.planes.shape[0])

    def field(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The volume renderer's field: points [N, M, 3] with N = B · views → (sdf [N, M], rgb [N, M, 3])."""
        planes = self.planes if self.planes.ndim == 5 else self.planes[None]
        n, b = points.shape[0], planes.shape[0]
        if n % b:
            raise ValueError(f"{n} cameras cannot be split evenly over {b} triplanes")
        grouped = points.reshape(b, -1, 3)                                          # [B, views · M, 3]
        sdf, rgb = self.decoder(sample_triplane(planes, grouped, self.bound), grouped)
        return sdf.reshape(n, -1), rgb.reshape(n, -1, 3)


@torch.no_grad()
def sdf_grid(triplane: Triplane, resolution: int, index: int = 0, chunk: int = 65536) -> torch.Tensor:
    """SDF of object ``index`` on a cubic grid [R, R, R] over [-bound, bound]³, laid out as
    :func:`fewstep.nodes.core.mesh.mesh_from_sdf_grid` reads it: ``grid[i, j, k]`` at
    (x, y, z) = −bound + (i, j, k) · 2 bound / (R − 1). Use with ``bounds=(-bound, bound)``."""
    if resolution < 2:
        raise ValueError(f"sdf_grid needs resolution >= 2, got {resolution}")
    if not 0 <= index < triplane.batch:
        raise ValueError(f"object index {index} out of range for a batch of {triplane.batch}")
    planes = triplane.planes if triplane.planes.ndim == 5 else triplane.planes[None]
    axis = torch.linspace(-triplane.bound, triplane.bound, resolution, dtype=planes.dtype, device=planes.device)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(1, -1, 3)   # [1, R³, 3]
    values = [triplane.decoder(sample_triplane(planes[index:index + 1], part, triplane.bound), part)[0]
              for part in points.split(chunk, dim=1)]
    return torch.cat(values, dim=1).reshape(resolution, resolution, resolution)
