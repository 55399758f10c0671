"""Procedural 3D primitives with exact captions, rendered at known views: the multi-view teacher's training data.

An object is one coloured primitive centred at the origin, captioned "a <colour> <shape>" (6 colours x
4 shapes = 24 captions). Each shape is an analytic signed distance function (negative inside; Quilez'
exact SDFs for box, capped cylinder and capped cone); its surface colour is the base colour times a
Lambert shade from a fixed world light, baked into the field (view-independent, so a triplane can hold it
exactly). Views are rendered by the shared volume renderer (``nodes.core.render.volume``) from orbit
cameras: azimuth uniform in [0, 360), elevation uniform in [0, 30] degrees (MVDream's and TriplaneTurbo's
range), looking at the origin.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fewstep.nodes.core.render.camera import Cameras, orbit_cameras
from fewstep.nodes.core.render.volume import VolSDFDensity, VolumeSettings, render_field

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.20, 0.20), "green": (0.20, 0.73, 0.27), "blue": (0.24, 0.39, 0.92),
    "yellow": (0.92, 0.82, 0.20), "purple": (0.65, 0.27, 0.80), "white": (0.92, 0.92, 0.92),
}
SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone")
BACKGROUND = (0.14, 0.14, 0.17)
LIGHT = (0.4, 0.8, 0.45)             # direction towards the light (normalised below)
AMBIENT = 0.35


@dataclass(frozen=True)
class ViewSpec:
    """How objects are seen: image side, camera distance and horizontal field of view, elevation range.

    16 px: on the shared 2-core CPU the teacher got 242 steps in 4 minutes at 32 px and sampled noise; at
    16 px the same budget buys about four times the steps (and renders of a distillation cost a quarter)."""

    size: int = 16
    distance: float = 2.4
    fov: float = 40.0
    max_elevation: float = 30.0


@dataclass(frozen=True)
class Primitive:
    shape: str
    colour: str

    def caption(self) -> str:
        return f"a {self.colour} {self.shape}"


def all_primitives() -> list[Primitive]:
    """The 24 objects in a fixed order (colour-major)."""
    return [Primitive(shape, colour) for colour in COLOURS for shape in SHAPES]


def parse_caption(text: str) -> Primitive | None:
    """The object a caption names ("a red cube"), or None when it names no known colour and shape."""
    words = text.lower().replace(",", " ").split()
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES]
    return Primitive(shapes[0], colours[0]) if colours and shapes else None


# ------------------------------------------------------------------------------------------ SDFs


def sdf_sphere(p: torch.Tensor) -> torch.Tensor:
    return p.norm(dim=-1) - 0.5


def sdf_box(p: torch.Tensor, half: float = 0.4) -> torch.Tensor:
    """length(max(q, 0)) + min(max_i q_i, 0), q = |p| − b (Quilez, exact)."""
    q = p.abs() - half
    return q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0)


def sdf_cylinder(p: torch.Tensor, radius: float = 0.4, half_height: float = 0.42) -> torch.Tensor:
    """Capped cylinder about +y (exact): d = (|p_xz| − r, |p_y| − h)."""
    d = torch.stack([p[..., [0, 2]].norm(dim=-1) - radius, p[..., 1].abs() - half_height], dim=-1)
    return d.clamp_min(0).norm(dim=-1) + d.amax(-1).clamp_max(0)


def sdf_cone(p: torch.Tensor, half_height: float = 0.42, r_bottom: float = 0.5, r_top: float = 0.0) -> torch.Tensor:
    """Capped cone about +y from radius r_bottom at y = −h to r_top at y = +h (Quilez' sdCappedCone, exact)."""
    qx, qy = p[..., [0, 2]].norm(dim=-1), p[..., 1]
    k1 = (r_top, half_height)
    k2 = (r_top - r_bottom, 2.0 * half_height)
    ca_x = qx - torch.minimum(qx, torch.where(qy < 0, torch.full_like(qx, r_bottom), torch.full_like(qx, r_top)))
    ca_y = qy.abs() - half_height
    k2_sq = k2[0] ** 2 + k2[1] ** 2
    h = (((k1[0] - qx) * k2[0] + (k1[1] - qy) * k2[1]) / k2_sq).clamp(0.0, 1.0)
    cb_x, cb_y = qx - k1[0] + k2[0] * h, qy - k1[1] + k2[1] * h
    sign = torch.where((cb_x < 0) & (ca_y < 0), -1.0, 1.0)
    return sign * torch.minimum(ca_x**2 + ca_y**2, cb_x**2 + cb_y**2).clamp_min(0).sqrt()


SDFS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sphere": sdf_sphere, "cube": sdf_box, "cylinder": sdf_cylinder, "cone": sdf_cone}


def shaded_field(prims: list[Primitive], views_per_object: int
                 ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The renderer's field for a batch of objects: camera row n sees object n // views_per_object.

    Colour = base · (AMBIENT + (1 − AMBIENT) · max(0, n · l)) with n the SDF's normal (central differences)."""
    def field(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sdf, rgb = [], []
        light = points.new_tensor(LIGHT)
        light = light / light.norm()
        for i, prim in enumerate(prims):
            pts = points[i * views_per_object:(i + 1) * views_per_object]            # [V, M, 3]
            fn = SDFS[prim.shape]
            eps = 1e-3
            offsets = torch.eye(3, dtype=pts.dtype, device=pts.device) * eps
            normal = torch.stack([fn(pts + o) - fn(pts - o) for o in offsets], dim=-1)  # [V, M, 3]
            normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            shade = AMBIENT + (1 - AMBIENT) * (normal @ light).clamp_min(0)            # [V, M]
            sdf.append(fn(pts))
            rgb.append(shade[..., None] * pts.new_tensor(COLOURS[prim.colour]))
        return torch.cat(sdf), torch.cat(rgb)
    return field


def view_cameras(azimuths: list[float], elevations: list[float], spec: ViewSpec) -> Cameras:
    return orbit_cameras(azimuths, elevations, spec.distance, spec.fov, spec.size)


def random_views(n: int, rng: random.Random, spec: ViewSpec) -> tuple[list[float], list[float]]:
    """n (azimuth, elevation) pairs in degrees: azimuth uniform in [0, 360), elevation in [0, max]."""
    return ([rng.uniform(0.0, 360.0) for _ in range(n)], [rng.uniform(0.0, spec.max_elevation) for _ in range(n)])


def render_primitives(prims: list[Primitive], azimuths: list[float], elevations: list[float],
                      spec: ViewSpec = ViewSpec(), samples: int = 48) -> torch.Tensor:
    """Images [N, H, W, 3] in 0..1 of object i from view i (one view per object)."""
    cams = view_cameras(azimuths, elevations, spec)
    settings = VolumeSettings(samples=samples, importance=16, bound=1.0, density=VolSDFDensity(0.01))
    with torch.no_grad():
        image = render_field(shaded_field(prims, 1), cams, settings, background=BACKGROUND)
    return image.rgb.clamp(0, 1)


@dataclass(frozen=True, eq=False)
class ViewDataset:
    """Rendered views: images [N, 3, H, W] in −1..1, object index [N] into ``prims``, (azimuth, elevation)
    [N, 2] in degrees."""

    images: torch.Tensor
    labels: torch.Tensor
    views: torch.Tensor
    prims: tuple[Primitive, ...]


def make_dataset(views_per_object: int, seed: int, spec: ViewSpec = ViewSpec(), chunk: int = 64) -> ViewDataset:
    """``views_per_object`` random views of each of the 24 objects (deterministic in ``seed``)."""
    rng = random.Random(seed)
    prims = all_primitives()
    items = [(i, *view) for i in range(len(prims)) for view in zip(*random_views(views_per_object, rng, spec),
                                                                   strict=True)]
    images = []
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        images.append(render_primitives([prims[i] for i, _, _ in part], [a for _, a, _ in part],
                                        [e for _, _, e in part], spec))
    rgb = torch.cat(images).permute(0, 3, 1, 2).contiguous()                          # [N, 3, H, W]
    labels = torch.tensor([i for i, _, _ in items])
    views = torch.tensor([[a, e] for _, a, e in items], dtype=torch.float32)
    return ViewDataset(rgb * 2 - 1, labels, views, tuple(prims))


def camera_features(views: torch.Tensor) -> torch.Tensor:
    """(sin a, cos a, sin e, cos e) [N, 4] of (azimuth, elevation) [N, 2] in degrees: the teacher's camera
    input (MVDream feeds the camera through an MLP added to the timestep embedding; this is its analogue)."""
    rad = views * (math.pi / 180.0)
    return torch.stack([rad[:, 0].sin(), rad[:, 0].cos(), rad[:, 1].sin(), rad[:, 1].cos()], dim=-1)
