"""Volume rendering of SDF fields against analytic cases (a sphere's opacity mask, a plane's depth), compositing
identities, importance sampling, triplane sampling and decoding, and gradients against finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.core.render.camera import orbit_cameras
from fewstep.nodes.core.render.triplane import (
    Triplane,
    TriplaneDecoder,
    TriplaneDecoderConfig,
    sample_triplane,
    sdf_grid,
)
from fewstep.nodes.core.render.volume import (
    NeuSAlpha,
    VolSDFDensity,
    VolumeSettings,
    composite,
    importance_edges,
    ray_box,
    render_field,
    sdf_gradient,
    stratified_edges,
)

RADIUS, DISTANCE = 0.5, 3.0


def _sphere(radius: float = RADIUS, color: tuple[float, float, float] = (0.9, 0.3, 0.1)):
    def field(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return points.norm(dim=-1) - radius, points.new_tensor(color).expand(*points.shape[:-1], 3)

    return field


@pytest.mark.parametrize("density", [VolSDFDensity(beta=0.005), NeuSAlpha(inv_std=200.0)], ids=["volsdf", "neus"])
def test_sphere_opacity_mask_is_the_projected_disk(density):
    cams = orbit_cameras([0.0, 130.0], [15.0, -60.0], DISTANCE, 40.0, 48, dtype=torch.float64)
    image = render_field(_sphere(), cams, VolumeSettings(samples=96, importance=32, density=density))
    # pixel distance from the image centre vs the disk radius f r / √(d² − r²) (the sphere's tangent cone)
    disk = float(cams.focal[0]) * RADIUS / math.sqrt(DISTANCE**2 - RADIUS**2)
    offset = (cams.pixel_centres() - 24.0).norm(dim=-1)
    opacity = image.opacity.reshape(2, -1)
    # 1 px inside: opaque; 1 px outside: clear (VolSDF's Laplace tail grows the mask by ≈ β ln(√(2πrβ)/β) ≈ 0.014
    # world units = 0.3 px here, NeuS' logistic one by less)
    assert (opacity[:, offset < disk - 1.0] > 0.99).all()
    assert (opacity[:, offset > disk + 1.0] < 0.5).all()
    assert (opacity[:, offset > disk + 3.0] < 1e-3).all()
    inside = opacity[:, offset < disk - 1.0]
    assert torch.allclose(image.rgb.reshape(2, -1, 3)[:, offset < disk - 1.0],
                          torch.tensor([0.9, 0.3, 0.1], dtype=torch.float64), atol=0.01)
    assert inside.numel() > 2 * 300


def test_depth_of_a_plane_and_of_the_sphere_front():
    # half-space y <= 0.3 x − 0.2 (SDF (y − 0.3 x + 0.2)/|n|): depth per pixel from the ray–plane intersection
    normal = torch.tensor([-0.3, 1.0, 0.0], dtype=torch.float64)

    def plane(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (points @ normal + 0.2) / normal.norm(), torch.ones_like(points)

    cams = orbit_cameras([10.0, -20.0], [40.0, 55.0], DISTANCE, 30.0, 16, dtype=torch.float64)
    settings = VolumeSettings(samples=128, importance=64, density=NeuSAlpha(inv_std=400.0))
    image = render_field(plane, cams, settings)
    origins, dirs, cos = cams.rays()
    t = -(origins @ normal + 0.2) / (dirs @ normal)
    # the field is clipped to the cube: compare the rays that enter it above the plane and cross the plane inside
    near, far, _ = ray_box(origins, dirs, 1.0)
    entry_above = plane(origins + near[..., None] * dirs)[0] > 0.05
    hit = entry_above & (t > near) & (t < far - 0.05) & (image.opacity.reshape(2, -1) > 0.999)
    assert hit.float().mean() > 0.5
    # NeuS is unbiased to first order on a plane; the residual is the sampling (spacing ≈ 3.5 / 192 per ray)
    assert torch.allclose(image.depth.reshape(2, -1)[hit], (t * cos)[hit], atol=5e-3)
    sphere = render_field(_sphere(), orbit_cameras([0.0], 0.0, DISTANCE, 40.0, 9, dtype=torch.float64), settings)
    assert sphere.depth[0, 4, 4] == pytest.approx(DISTANCE - RADIUS, abs=5e-3)      # nearest point of the sphere


def test_importance_sampling_sharpens_depth():
    cams = orbit_cameras([0.0], 0.0, DISTANCE, 40.0, 9, dtype=torch.float64)
    # radius 0.47: the surface (t = 2.53) falls between the 16 stratified edges of the chord [2, 4]
    errors = [abs(float(render_field(_sphere(0.47), cams, VolumeSettings(samples=16, importance=k, density=NeuSAlpha(800.0)))
                        .depth[0, 4, 4]) - (DISTANCE - 0.47)) for k in (0, 32)]
    assert errors[1] < errors[0] / 4 and errors[1] < 5e-3


def test_composite_weights_and_importance_edges_identities():
    alpha = torch.tensor([[0.5, 0.5, 1.0, 0.3]], dtype=torch.float64)
    assert torch.allclose(composite(alpha), torch.tensor([[0.5, 0.25, 0.25, 0.0]], dtype=torch.float64), atol=1e-6)
    edges = stratified_edges(torch.tensor([1.0]), torch.tensor([2.0]), 4, None)
    assert torch.allclose(edges, torch.tensor([[1.0, 1.25, 1.5, 1.75, 2.0]]))
    jittered = stratified_edges(torch.tensor([1.0]), torch.tensor([2.0]), 4, torch.Generator().manual_seed(0))
    assert (jittered.diff() > 0).all() and jittered[0, 0] == 1.0 and jittered[0, -1] == 2.0
    new = importance_edges(edges, torch.tensor([[0.0, 0.0, 1.0, 0.0]]), 8, None)
    # every new edge lands in the one section with weight: [1.5, 1.75]
    assert ((new >= 1.5) & (new <= 1.75)).sum() == 8 + 2 and (new.diff() >= 0).all()


def test_volume_gradients_match_finite_differences():
    cams = orbit_cameras([20.0, 100.0], 10.0, DISTANCE, 40.0, 10, dtype=torch.float64)
    probe = torch.rand(3, 2, 10, 10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    settings = VolumeSettings(samples=48, density=VolSDFDensity(beta=0.05))

    def loss(params: torch.Tensor) -> torch.Tensor:
        def field(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            sdf = (points - params[:3]).norm(dim=-1) - params[3]
            return sdf, torch.sigmoid(points @ params[4:7]).unsqueeze(-1).expand(*points.shape[:-1], 3)

        image = render_field(field, cams, settings)
        return (image.rgb * probe[0]).sum() + (image.opacity * probe[1, ..., 0]).sum() + (image.depth * probe[2, ..., 0]).sum()

    params = torch.tensor([0.1, -0.05, 0.0, 0.45, 1.0, -2.0, 0.5], dtype=torch.float64)
    p = params.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(p), p)
    step = 1e-6
    numeric = torch.stack([(loss(params + step * e) - loss(params - step * e)) / (2 * step)
                           for e in torch.eye(7, dtype=torch.float64)])
    assert grad.abs().min() > 1e-3
    assert torch.allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_triplane_sampling_is_exact_on_linear_planes():
    # channel 0 of plane xy holds x, channel 1 holds y; of xz: x, z; of yz: y, z (bilinear is exact on linear)
    r = 9
    line = torch.linspace(-1, 1, r, dtype=torch.float64)
    col, row = line[None, :].expand(r, r), line[:, None].expand(r, r)
    planes = torch.stack([torch.stack([col, row])] * 3)[None]                       # [1, 3, 2, R, R]
    points = torch.rand(1, 50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    feats = sample_triplane(planes, points, bound=1.0)                              # [1, 50, 6]
    x, y, z = points[0].unbind(-1)
    assert torch.allclose(feats[0], torch.stack([x, y, x, z, y, z], dim=-1), atol=1e-12)
    with pytest.raises(ValueError, match=r"\[B, 3, C, R, R\]"):
        sample_triplane(planes[0], points, 1.0)


def test_triplane_field_renders_per_object_and_passes_gradients_to_planes():
    torch.manual_seed(0)
    decoder = TriplaneDecoder(TriplaneDecoderConfig(channels=4, hidden=16, sphere_radius=0.5)).double()
    planes = (0.1 * torch.randn(2, 3, 4, 8, 8, dtype=torch.float64)).requires_grad_(True)
    triplane = Triplane(planes, decoder, bound=1.0)
    cams = orbit_cameras([0.0, 90.0] * 2, 20.0, DISTANCE, 40.0, 12, dtype=torch.float64)  # 2 objects × 2 views
    image = render_field(triplane.field, cams, VolumeSettings(samples=32, density=NeuSAlpha(64.0)))
    assert image.rgb.shape == (4, 12, 12, 3) and (image.opacity[:, 6, 6] > 0.9).all()   # the sphere prior
    image.rgb.sum().backward()
    assert planes.grad is not None and planes.grad[0].abs().sum() > 0 and planes.grad[1].abs().sum() > 0
    # object 0's views do not depend on object 1's planes
    alone = render_field(Triplane(planes[:1].detach(), decoder).field, cams.select([0, 1]),
                         VolumeSettings(samples=32, density=NeuSAlpha(64.0)))
    assert torch.allclose(alone.rgb, image.rgb[:2].detach(), atol=1e-12)
    grad = sdf_gradient(triplane.field, torch.zeros(4, 5, 3, dtype=torch.float64) + 0.3)
    assert grad.shape == (4, 5, 3) and torch.isfinite(grad).all()
    with pytest.raises(ValueError, match="channels"):
        Triplane(planes[:, :, :2].detach(), decoder)


def test_triplane_sdf_grid_feeds_marching_cubes():
    from fewstep.nodes.core.mesh import mesh_from_sdf_grid

    decoder = TriplaneDecoder(TriplaneDecoderConfig(channels=2, hidden=8, sphere_radius=0.6))
    torch.nn.init.zeros_(decoder.net[-1].weight)
    torch.nn.init.zeros_(decoder.net[-1].bias)                  # SDF = |p| − 0.6 exactly (the sphere prior)
    triplane = Triplane(torch.randn(2, 3, 2, 8, 8), decoder, bound=1.0)
    grid = sdf_grid(triplane, 33, index=1)
    axis = torch.linspace(-1, 1, 33)
    assert grid[16, 16, 16] == pytest.approx(-0.6) and grid[32, 16, 16] == pytest.approx(0.4)
    assert grid[20, 10, 30] == pytest.approx(float(torch.stack([axis[20], axis[10], axis[30]]).norm()) - 0.6, abs=1e-6)
    mesh = mesh_from_sdf_grid(grid, (-1.0, 1.0))
    assert torch.allclose(mesh.vertices.norm(dim=1), torch.full((mesh.num_vertices,), 0.6), atol=0.01)
    with pytest.raises(ValueError, match="out of range"):
        sdf_grid(triplane, 9, index=2)
