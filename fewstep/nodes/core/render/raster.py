"""Soft rasterisation of triangle meshes (SoftRas: Liu, Li, Chen, Li, "Soft Rasterizer", ICCV 2019), in torch.

Every triangle j covers every pixel p with a probability (SoftRas eq. 1, distances in pixels)

    D_j(p) = sigmoid(δ_j(p) · d_j(p)² / σ),   δ = +1 inside the projected triangle, −1 outside,

d_j(p) the screen-space distance from p to the triangle's nearest edge. The silhouette aggregates them as
independent events (eq. 4): A(p) = 1 − Π_j (1 − D_j(p)). Colour and depth are a softmax over the triangles
ordered by depth (eq. 3, without its background term), composited over the background by the silhouette:

    w_j = D_j exp(z̄_j / γ),   C_fg(p) = Σ_j w_j C_j / Σ_j w_j,   I(p) = A(p) C_fg(p) + (1 − A(p)) C_bg,

z̄_j ∈ [0, 1] the normalised inverse depth of triangle j at p (1 at ``near``, 0 at ``far``: nearer wins), C_j
the perspective-correct barycentric interpolation of its vertex colours (barycentrics clamped to the triangle
outside it, as SoftRas). As γ → 0 this becomes a z-buffer; as σ → 0, a hard silhouette. Why not eq. 3's
w_bg = exp(ε/γ): with z̄/γ in the hundreds a triangle with D = 1e-4 still outweighs the background, so colour
bled ~√(9σ) px past the silhouette and biased every photometric fit toward shrunken parts (measured: at 24 px
and σ = 1 px² the ground-truth joint of a hinged lid scored worse than a wrong one).

Sums are kept in log-sum-exp form (:class:`Fragments`) so layers rendered separately — e.g. a static part
rendered once and a moving part re-rendered at every optimisation step — combine exactly by
:func:`combine_fragments`, and only the pixels near each projected triangle are evaluated (cost ∝ covered area, not pixels × faces).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fewstep.nodes.core.render.camera import Cameras

# D_j below 1e-4 (outside, d²/σ > log(1/1e-4 − 1)) counts as no coverage, as in SoftRas' kernel
_CUTOFF_LOGIT = 9.2102


@dataclass(frozen=True)
class SoftRasterSettings:
    """Knobs of the soft rasteriser.

    Args:
        sigma: σ in pixels²: the silhouette edge blurs over about √σ · 2 pixels (0.05 ≈ hard; SoftRas' 1e-4
            in [-1, 1] units is ≈ 0.1 px² at 64 px).
        gamma: γ, the softness of the depth ordering on normalised inverse depth (1e-4 ≈ z-buffer).
        near / far: depth range of the normalisation; faces with a corner nearer than ``near`` are dropped.
        cull_backfaces: skip faces seen from behind (exact for meshes whose every visible surface has an
            outward face — closed parts, or open ones with inner faces — and about half the work).
    """

    sigma: float = 1.0
    gamma: float = 1e-4
    near: float = 0.05
    far: float = 100.0
    cull_backfaces: bool = False

    def __post_init__(self) -> None:
        if self.sigma <= 0 or self.gamma <= 0:
            raise ValueError(f"sigma and gamma must be positive, got sigma={self.sigma}, gamma={self.gamma}")
        if not 0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")


@dataclass(frozen=True, eq=False)
class Fragments:
    """Per-pixel sums over a set of triangles, in a form that combines exactly with another set's.

    All [N, P] (P = H W pixels, row-major) except ``color`` [N, P, 3]; with l_j = log D_j + z̄_j / γ:

    Args:
        log_transmittance: Σ_j log(1 − D_j)  (silhouette A = 1 − exp of it).
        log_norm: m = max_j l_j, the log-sum-exp shift (−1e30 where no triangle is near).
        weight: Σ_j exp(l_j − m).
        color: Σ_j exp(l_j − m) C_j.
        depth: Σ_j exp(l_j − m) z_j  (camera depth z of the triangle at the pixel).
    """

    log_transmittance: torch.Tensor
    log_norm: torch.Tensor
    weight: torch.Tensor
    color: torch.Tensor
    depth: torch.Tensor


@dataclass(frozen=True, eq=False)
class RasterImage:
    """A rendered batch: ``rgb`` [N, H, W, 3], silhouette ``alpha`` [N, H, W] in [0, 1], camera ``depth``
    [N, H, W] (the softmax-weighted depth of the covering triangles; 0 where nothing is near)."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor


def empty_fragments(n: int, pixels: int, settings: SoftRasterSettings, like: torch.Tensor) -> Fragments:
    """Fragments of no triangle (the identity of :func:`combine_fragments`)."""
    zeros = like.new_zeros(n, pixels)
    return Fragments(zeros, zeros - 1e30, zeros, like.new_zeros(n, pixels, 3), zeros)


def combine_fragments(a: Fragments, b: Fragments) -> Fragments:
    """Fragments of the union of two triangle sets (log-sum-exp merge: m = max(m_a, m_b), rescale both)."""
    m = torch.maximum(a.log_norm, b.log_norm)
    sa, sb = torch.exp(a.log_norm - m), torch.exp(b.log_norm - m)
    return Fragments(a.log_transmittance + b.log_transmittance, m, a.weight * sa + b.weight * sb,
                     a.color * sa[..., None] + b.color * sb[..., None], a.depth * sa + b.depth * sb)


def resolve(fragments: Fragments, cameras: Cameras, settings: SoftRasterSettings,
            background: tuple[float, float, float] | torch.Tensor = (1.0, 1.0, 1.0)) -> RasterImage:
    """The image of the fragments: A = 1 − Π(1 − D_j), and the depth-ordered colour composited by A (module
    docstring). ``settings`` is unused (kept so every renderer call reads alike)."""
    n, h, w = len(cameras), cameras.height, cameras.width
    bg = torch.as_tensor(background, dtype=fragments.color.dtype, device=fragments.color.device)
    alpha = -torch.expm1(fragments.log_transmittance)                               # [N, P]
    weight = fragments.weight.clamp_min(1e-30)[..., None]
    rgb = alpha[..., None] * (fragments.color / weight) + (1.0 - alpha)[..., None] * bg
    depth = fragments.depth / fragments.weight.clamp_min(1e-30)
    return RasterImage(rgb.reshape(n, h, w, 3), alpha.reshape(n, h, w), depth.reshape(n, h, w))


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, settings: SoftRasterSettings,
              vertex_colors: torch.Tensor | None = None, face_shade: torch.Tensor | None = None) -> Fragments:
    """Fragments of a mesh seen by each camera.

    Args:
        vertices: [V, 3] (one pose for every camera) or [N, V, 3] (one pose per camera), world coordinates.
        faces: [F, 3] vertex indices (either winding: triangles are two-sided).
        vertex_colors: [V, 3] or [N, V, 3] in 0..1; None renders white.
        face_shade: [F] or [N, F] factors multiplying each face's colour (e.g. :func:`lambert_shade`).
    """
    n = len(cameras)
    verts = vertices.expand(n, *vertices.shape[-2:]) if vertices.ndim == 2 else vertices
    if verts.shape[0] != n:
        raise ValueError(f"vertices [N, V, 3] need one pose per camera: {verts.shape[0]} poses, {n} cameras")
    colors = vertex_colors if vertex_colors is not None else verts.new_ones(verts.shape[1], 3)
    colors = colors.to(verts.dtype).expand(n, *colors.shape[-2:]) if colors.ndim == 2 else colors.to(verts.dtype)
    uv, z = cameras.project(verts)                                                  # [N, V, 2], [N, V]
    corner_colors = colors[:, faces]                                                # [N, F, 3 corners, 3]
    if face_shade is not None:
        shade = face_shade.to(verts.dtype).expand(n, faces.shape[0])
        corner_colors = corner_colors * shade[..., None, None]
    pairs = _pixel_face_pairs(uv[:, faces].detach(), z[:, faces].detach(), cameras, settings)
    flat_uv, flat_z = uv[:, faces].reshape(-1, 3, 2), z[:, faces].reshape(-1, 3)          # [N F, 3, ...]
    return _pair_fragments(pairs, flat_uv, flat_z, corner_colors.reshape(-1, 3, 3), cameras, settings)


@dataclass(frozen=True, eq=False)
class _Pairs:
    """The (image, pixel, face) triples worth evaluating, as flat [K] index tensors; ``owner`` = image · F + face."""

    image: torch.Tensor
    pixel: torch.Tensor
    owner: torch.Tensor


def _pixel_face_pairs(uv: torch.Tensor, z: torch.Tensor, cameras: Cameras, settings: SoftRasterSettings) -> _Pairs:
    """Pixels inside each projected face's bounding box grown by the cut-off distance r (D_j < D_MIN beyond it).

    As SoftRas' kernel, a pixel outside a triangle with D_j < 1e-4 ignores it: without the cut a far-off nearer
    triangle with D ≈ e^-30 would still win the depth softmax (exp(z̄/γ) is up to e^10000). uv [N, F, 3, 2],
    z [N, F, 3] (detached: the pairs are a discrete choice)."""
    n, f = z.shape[:2]
    reach = (settings.sigma * _CUTOFF_LOGIT) ** 0.5
    lo = torch.floor(uv.amin(2) - reach - 0.5).clamp_min(0)                         # [N, F, 2] first pixel index
    hi = torch.ceil(uv.amax(2) + reach - 0.5)
    hi = torch.minimum(hi, uv.new_tensor([cameras.width - 1, cameras.height - 1]))
    size = (hi - lo + 1).clamp_min(0)
    valid = (z > settings.near).all(-1) & torch.isfinite(uv).all(-1).all(-1)
    if settings.cull_backfaces:   # outward (counter-clockwise) faces turn clockwise in (u right, v down) pixels
        e1, e2 = uv[..., 1, :] - uv[..., 0, :], uv[..., 2, :] - uv[..., 0, :]
        valid &= e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0] < 0
    count = torch.where(valid, size[..., 0] * size[..., 1], 0).long().reshape(-1)   # [N F] pixels per face
    owner = torch.repeat_interleave(torch.arange(n * f, device=uv.device), count)   # [K]
    local = torch.arange(owner.shape[0], device=uv.device) - (torch.cumsum(count, 0) - count)[owner]
    width = size[..., 0].long().reshape(-1)[owner].clamp_min(1)
    x = lo[..., 0].long().reshape(-1)[owner] + local % width
    y = lo[..., 1].long().reshape(-1)[owner] + local // width
    return _Pairs(owner // f, y * cameras.width + x, owner)


def _edge_terms(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance from points p [K, 2] to segments a→b [K, 2] and the edge function (b − a) × (p − a)."""
    e, w = b - a, p - a
    t = ((w * e).sum(-1) / (e * e).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    d = w - t[:, None] * e
    return (d * d).sum(-1), e[:, 0] * w[:, 1] - e[:, 1] * w[:, 0]


def _pair_fragments(pairs: _Pairs, uv: torch.Tensor, z: torch.Tensor, corner_colors: torch.Tensor, cameras: Cameras,
                    settings: SoftRasterSettings) -> Fragments:
    """SoftRas terms of every pair, summed per pixel. uv [N F, 3, 2], z [N F, 3], corner colours [N F, 3, 3]
    (index_select, not advanced indexing: its backward is an index_add rather than an accumulating index_put,
    and indexing was the largest item of the CPU profile)."""
    corners, depth3 = uv.index_select(0, pairs.owner), z.index_select(0, pairs.owner)  # [K, 3, 2], [K, 3]
    p = cameras.pixel_centres().to(uv.dtype)[pairs.pixel]                           # [K, 2]
    terms = [_edge_terms(p, corners[:, k], corners[:, (k + 1) % 3]) for k in range(3)]
    dist2 = torch.minimum(torch.minimum(terms[0][0], terms[1][0]), terms[2][0])     # [K]
    e01, e12, e20 = (t[1] for t in terms)
    area2 = e01 + e12 + e20                     # edge functions sum to twice the signed area at any p
    sign = torch.where(area2.detach() >= 0, 1.0, -1.0).to(dist2.dtype)
    inside = (e01 * sign >= 0) & (e12 * sign >= 0) & (e20 * sign >= 0)
    # barycentric of corner k = edge function of the opposite edge / 2·area; clamped to the triangle outside it
    bary = torch.stack([e12, e20, e01], dim=-1) / (sign * area2.abs().clamp_min(1e-9))[:, None]
    bary = bary.clamp(0.0, 1.0)
    total_bary = bary.sum(-1, keepdim=True)          # >= 1 unless the face is degenerate (edge-on): then the centroid
    bary = torch.where(total_bary > 1e-6, bary / total_bary.clamp_min(1e-6), 1.0 / 3.0)   # [K, 3]
    inv_z = 1.0 / depth3                                                            # near-plane faces have no pairs
    inv_depth = (bary * inv_z).sum(-1)                                              # perspective-correct 1/z
    persp = bary * inv_z / inv_depth[:, None]
    signed = torch.where(inside, dist2, -dist2) / settings.sigma
    kept = inside | (signed > -_CUTOFF_LOGIT)
    z_norm = (inv_depth - 1.0 / settings.far) / (1.0 / settings.near - 1.0 / settings.far)
    logit = F.logsigmoid(signed) + z_norm / settings.gamma                          # log D_j + z̄_j / γ
    flat = pairs.image * (cameras.width * cameras.height) + pairs.pixel
    empty = empty_fragments(len(cameras), cameras.width * cameras.height, settings, uv)
    m = empty.log_norm.reshape(-1).scatter_reduce(0, flat[kept], logit.detach()[kept], "amax")
    # exp only of kept logits (a dropped one may exceed m: exp → inf, and 0 · inf = NaN in the backward)
    w = torch.where(kept, torch.exp(torch.where(kept, logit - m[flat], -1e4)), 0.0)   # [K]
    color = torch.einsum("kc,kcd->kd", persp, corner_colors.index_select(0, pairs.owner))

    def total(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return like.reshape(-1, *values.shape[1:]).index_add(0, flat, values).reshape(like.shape)

    log_t = torch.where(kept, F.logsigmoid(-signed), 0.0)
    return Fragments(total(log_t, empty.log_transmittance), m.reshape(empty.log_norm.shape),
                     total(w, empty.weight), total(w[:, None] * color, empty.color), total(w / inv_depth, empty.depth))


def lambert_shade(vertices: torch.Tensor, faces: torch.Tensor, light: tuple[float, float, float] = (0.3, 0.8, 0.5),
                  ambient: float = 0.45) -> torch.Tensor:
    """Two-sided Lambert factors per face, ambient + (1 − ambient) |n · l|, for vertices [V, 3] or [N, V, 3];
    returns [F] or [N, F]. A fixed world light makes a face's brightness follow its orientation, which gives
    the photometric loss a handle on rotations."""
    tri = vertices[..., faces, :]                                                   # [..., F, 3, 3]
    normal = torch.linalg.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    direction = normal.new_tensor(light)
    direction = direction / direction.norm()
    return ambient + (1.0 - ambient) * (normal @ direction).abs()


def render_mesh(vertices: torch.Tensor, faces: torch.Tensor, cameras: Cameras, settings: SoftRasterSettings,
                vertex_colors: torch.Tensor | None = None, face_shade: torch.Tensor | None = None,
                background: tuple[float, float, float] | torch.Tensor = (1.0, 1.0, 1.0)) -> RasterImage:
    """:func:`rasterize` then :func:`resolve`: RGB, silhouette and depth of one mesh per camera."""
    fragments = rasterize(vertices, faces, cameras, settings, vertex_colors, face_shade)
    return resolve(fragments, cameras, settings, background)
