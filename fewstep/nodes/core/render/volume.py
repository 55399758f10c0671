"""Volume rendering of signed-distance fields with colour, in torch.

A field maps points to (SDF, RGB): ``field(points [N, M, 3]) -> (sdf [N, M], rgb [N, M, 3])`` (negative SDF
inside; batch row n belongs to camera n, so a batch of objects renders with one camera group per object).
Along each ray r(t) = o + t d the interval [t_near, t_far] (the ray's chord through the cube [-bound, bound]³)
is cut into n sections by n + 1 stratified edges t_0 < ... < t_n; each section gets an opacity α_i and colour
c_i = (c(t_i) + c(t_{i+1})) / 2, and the pixel is the alpha composite (Max 1995; NeRF eq. 3)

    T_i = Π_{j<i} (1 − α_j),   w_i = T_i α_i,   C = Σ_i w_i c_i + (1 − Σ_i w_i) C_bg,
    opacity = Σ_i w_i,   depth = Σ_i w_i z_i / opacity   (z_i the section midpoint's camera depth).

Two ways from SDF to α:

- VolSDF (Yariv et al. 2021, eq. 2–3): σ(x) = (1/β) Ψ_β(−d(x)), Ψ_β the CDF of a zero-mean Laplace of scale
  β, and α_i = 1 − exp(−σ_i δ_i) with σ_i at the section midpoint and δ_i its length;
- NeuS (Wang et al. 2021, eq. 13): α_i = max((Φ_s(d_i) − Φ_s(d_{i+1})) / Φ_s(d_i), 0), Φ_s(x) = sigmoid(s x).

Importance sampling (NeRF's hierarchical sampling, eq. 5) re-cuts each ray where a first, gradient-free
pass put its weights, so thin surfaces get samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fewstep.nodes.core.render.camera import Cameras

Field = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class VolSDFDensity:
    """σ(d) = (1/β) Ψ_β(−d), with Ψ_β(s) = ½ exp(s/β) for s ≤ 0 and 1 − ½ exp(−s/β) for s > 0 (VolSDF eq. 2):
    density 1/β deep inside, 1/(2β) on the surface, decaying like exp(−d/β) outside; α_i = 1 − exp(−σ_i δ_i)."""

    beta: float = 0.01

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"VolSDF beta must be positive, got {self.beta}")

    def __call__(self, sdf_edges: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """α [R, n] of sections from SDF at the n + 1 edges [R, n + 1] and section lengths [R, n]."""
        mid = 0.5 * (sdf_edges[..., 1:] + sdf_edges[..., :-1])
        s = -mid
        psi = torch.where(s <= 0, 0.5 * torch.exp(s.clamp(max=0) / self.beta),
                          1.0 - 0.5 * torch.exp(-s.clamp(min=0) / self.beta))
        return -torch.expm1(-psi / self.beta * lengths)


@dataclass(frozen=True)
class NeuSAlpha:
    """α_i = max((Φ_s(d_i) − Φ_s(d_{i+1})) / Φ_s(d_i), 0), Φ_s = sigmoid(s ·) (NeuS eq. 13); ``inv_std`` is s."""

    inv_std: float = 64.0

    def __post_init__(self) -> None:
        if self.inv_std <= 0:
            raise ValueError(f"NeuS inv_std must be positive, got {self.inv_std}")

    def __call__(self, sdf_edges: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        prev = torch.sigmoid(sdf_edges[..., :-1] * self.inv_std)
        nxt = torch.sigmoid(sdf_edges[..., 1:] * self.inv_std)
        return ((prev - nxt) / prev.clamp_min(1e-6)).clamp(0.0, 1.0)


Density = VolSDFDensity | NeuSAlpha


@dataclass(frozen=True)
class VolumeSettings:
    """Knobs of :func:`render_field`.

    Args:
        samples: stratified sections per ray (n).
        importance: extra edges per ray drawn from the first pass's weights (0 = none).
        bound: the field lives in [-bound, bound]³; rays are clipped to it.
        density: how SDF becomes opacity (VolSDF or NeuS).
        ray_chunk: rays evaluated at once (memory ~ ray_chunk · (samples + importance) field evaluations).
    """

    samples: int = 64
    importance: int = 0
    bound: float = 1.0
    density: Density = VolSDFDensity()
    ray_chunk: int = 65536

    def __post_init__(self) -> None:
        if self.samples < 1 or self.importance < 0 or self.bound <= 0 or self.ray_chunk < 1:
            raise ValueError(f"need samples >= 1, importance >= 0, bound > 0, ray_chunk >= 1; got {self}")


@dataclass(frozen=True, eq=False)
class VolumeImage:
    """``rgb`` [N, H, W, 3], ``opacity`` [N, H, W] (Σ w_i), ``depth`` [N, H, W] (camera depth, 0 where the ray
    misses the volume)."""

    rgb: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor


def ray_box(origins: torch.Tensor, dirs: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entry and exit distances [...] of rays through the cube [-bound, bound]³ (slab method) and a hit mask;
    the entry is clamped to t >= 0 (camera inside the box)."""
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t1, t2 = (-bound - origins) / safe, (bound - origins) / safe
    near = torch.minimum(t1, t2).amax(-1).clamp_min(0.0)
    far = torch.maximum(t1, t2).amin(-1)
    return near, far, far > near


def stratified_edges(near: torch.Tensor, far: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n + 1 increasing edges [R, n + 1] from near to far: evenly spaced, each interior edge jittered uniformly
    within its stratum when a generator is given (training), exact otherwise (tests, previews)."""
    u = torch.linspace(0.0, 1.0, n + 1, dtype=near.dtype, device=near.device).expand(*near.shape, n + 1)
    if generator is not None:
        jitter = (torch.rand(u.shape, generator=generator, device=near.device, dtype=near.dtype) - 0.5) / n
        u = torch.cat([u[..., :1], (u[..., 1:-1] + jitter[..., 1:-1]), u[..., -1:]], dim=-1)
    return near[..., None] + (far - near)[..., None] * u


def composite(alpha: torch.Tensor) -> torch.Tensor:
    """Weights w_i = α_i Π_{j<i}(1 − α_j) [R, n] (exclusive cumulative product, in log space for stability)."""
    log_keep = torch.log1p(-alpha.clamp(max=1.0 - 1e-7))
    transmittance = torch.exp(torch.cumsum(log_keep, dim=-1) - log_keep)
    return alpha * transmittance


def importance_edges(edges: torch.Tensor, weights: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """k new edges per ray drawn by inverse CDF from the piecewise-constant pdf ∝ weights on the sections
    (NeRF eq. 5), merged with the old ones and sorted: [R, n + 1 + k]. Deterministic (evenly spaced quantiles)
    without a generator."""
    pdf = (weights + 1e-5) / (weights + 1e-5).sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1)], dim=-1)      # [R, n + 1]
    if generator is None:
        u = torch.linspace(0.5 / k, 1 - 0.5 / k, k, dtype=edges.dtype, device=edges.device).expand(*pdf.shape[:-1], k)
    else:
        u = torch.rand(*pdf.shape[:-1], k, generator=generator, device=edges.device, dtype=edges.dtype)
    idx = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True).clamp(1, cdf.shape[-1] - 1)
    c0, c1 = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    t0, t1 = edges.gather(-1, idx - 1), edges.gather(-1, idx)
    new = t0 + (u - c0) / (c1 - c0).clamp_min(1e-12) * (t1 - t0)
    return torch.sort(torch.cat([edges, new.detach()], dim=-1), dim=-1).values


def _shade_rays(field: Field, origins: torch.Tensor, dirs: torch.Tensor, edges: torch.Tensor,
                density: Density) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights [N, R, n], section colours [N, R, n, 3] and midpoints [N, R, n] for rays [N, R, 3] cut at
    edges [N, R, n + 1]."""
    points = origins[..., None, :] + edges[..., None] * dirs[..., None, :]              # [N, R, n + 1, 3]
    n, r, e = edges.shape
    sdf, rgb = field(points.reshape(n, r * e, 3))
    sdf, rgb = sdf.reshape(n, r, e), rgb.reshape(n, r, e, 3)
    alpha = density(sdf, edges[..., 1:] - edges[..., :-1])
    return composite(alpha), 0.5 * (rgb[..., 1:, :] + rgb[..., :-1, :]), 0.5 * (edges[..., 1:] + edges[..., :-1])


def _render_chunk(field: Field, origins: torch.Tensor, dirs: torch.Tensor, cos: torch.Tensor, settings: VolumeSettings,
                  background: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    near, far, hit = ray_box(origins, dirs, settings.bound)
    far = torch.where(hit, far, near + 1e-6)                   # a missing ray gets an empty interval: α = 0
    edges = stratified_edges(near, far, settings.samples, generator)
    if settings.importance:
        with torch.no_grad():
            coarse, _, _ = _shade_rays(field, origins, dirs, edges, settings.density)
        edges = importance_edges(edges, coarse, settings.importance, generator)
    weights, colors, mids = _shade_rays(field, origins, dirs, edges, settings.density)
    weights = weights * hit[..., None]
    opacity = weights.sum(-1)
    rgb = (weights[..., None] * colors).sum(-2) + (1.0 - opacity)[..., None] * background
    depth = (weights * mids).sum(-1) / opacity.clamp_min(1e-6) * cos
    return rgb, opacity, depth


def render_field(field: Field, cameras: Cameras, settings: VolumeSettings,
                 background: tuple[float, float, float] | torch.Tensor = (1.0, 1.0, 1.0),
                 generator: torch.Generator | None = None) -> VolumeImage:
    """RGB, opacity and depth of an SDF/colour field seen by each camera (module docstring for the maths).

    Args:
        field: ``points [N, M, 3] -> (sdf [N, M], rgb [N, M, 3])`` (row n is what camera n sees).
        generator: jitters the stratified samples (training); None samples deterministically.
    """
    origins, dirs, cos = cameras.rays()                                                  # [N, P, 3], [N, P]
    bg = torch.as_tensor(background, dtype=dirs.dtype, device=dirs.device)
    chunk = max(1, settings.ray_chunk // len(cameras))
    parts = [_render_chunk(field, origins[:, i:i + chunk], dirs[:, i:i + chunk], cos[:, i:i + chunk], settings, bg,
                           generator) for i in range(0, origins.shape[1], chunk)]
    rgb, opacity, depth = (torch.cat(items, dim=1) for items in zip(*parts, strict=True))
    n, h, w = len(cameras), cameras.height, cameras.width
    return VolumeImage(rgb.reshape(n, h, w, 3), opacity.reshape(n, h, w), depth.reshape(n, h, w))


def sdf_gradient(field: Field, points: torch.Tensor) -> torch.Tensor:
    """∇d at points [N, M, 3] by autograd (for normals and the eikonal term ‖∇d‖ = 1), with graph kept."""
    points = points.detach().requires_grad_(True)
    sdf, _ = field(points)
    (grad,) = torch.autograd.grad(sdf.sum(), points, create_graph=True)
    return grad
