"""Soft rasteriser against analytic cases: a sphere's silhouette (πr²f²/(d²−r²)), the depth of a tilted plane,
depth ordering, exact layer composition, and autograd gradients against central finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.core.render.camera import orbit_cameras
from fewstep.nodes.core.render.raster import (
    SoftRasterSettings,
    combine_fragments,
    lambert_shade,
    rasterize,
    render_mesh,
    resolve,
)


def _icosphere(radius: float, subdivisions: int = 3) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Icosphere (subdivision 3: 1280 faces) vertices, faces and inradius (nearest face plane to the centre)."""
    trimesh = pytest.importorskip("trimesh")
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    normals, centres = torch.tensor(sphere.face_normals), torch.tensor(sphere.triangles_center)
    return torch.tensor(sphere.vertices), torch.tensor(sphere.faces), float((normals * centres).sum(1).min())


def _quad(corners: list[list[float]], color: list[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    verts = torch.tensor(corners, dtype=torch.float64)
    return verts, torch.tensor([[0, 1, 2], [0, 2, 3]]), torch.tensor([color] * 4, dtype=torch.float64)


def test_sphere_silhouette_matches_the_projected_disk_and_the_exact_hull():
    spatial = pytest.importorskip("scipy.spatial")
    radius, distance = 0.5, 3.0
    verts, faces, inradius = _icosphere(radius)
    cams = orbit_cameras([0.0, 70.0], [20.0, -40.0], distance, 40.0, 96, dtype=torch.float64)
    alpha = render_mesh(verts, faces, cams, SoftRasterSettings(sigma=1e-3)).alpha        # σ ≈ hard edges
    covered = (alpha > 0.5).reshape(2, -1)
    disk = lambda r: math.pi * float(cams.focal[0]) ** 2 * r * r / (distance**2 - r * r)  # noqa: E731
    uv, _ = cams.project(verts)
    for i in range(2):
        # exact: the silhouette of a convex mesh is the hull of its projected vertices; every pixel centre agrees
        hull = torch.tensor(spatial.ConvexHull(uv[i].numpy()).equations)
        inside = ((cams.pixel_centres() @ hull[:, :2].T + hull[:, 2]) <= 0).all(1)
        assert torch.equal(covered[i], inside)
        # analytic: the polytope lies between its in- and circumscribed spheres, whose projections are disks of
        # area π f² r² / (d² − r²) (1547 and 1561 px here); counting pixel centres adds at most ~1% (Gauss circle)
        assert 0.99 * disk(inradius) <= covered[i].sum() <= 1.01 * disk(radius)


def test_depth_of_a_tilted_plane_is_exact():
    # a big quad in the plane z = 0.3 x (tilted), seen from the front: camera depth at every pixel follows from
    # intersecting the pixel's ray with the plane (perspective-correct interpolation is exact on a plane)
    verts, faces, colors = _quad([[-3, -3, -0.9], [3, -3, 0.9], [3, 3, 0.9], [-3, 3, -0.9]], [0.2, 0.4, 0.6])
    cams = orbit_cameras([0.0, 25.0], 10.0, 4.0, 50.0, 32, dtype=torch.float64)
    # σ = 1e-5 px²: a pixel centre within √(9.2σ) ≈ 0.01 px of the shared diagonal would blend the neighbour's
    # edge depth into the softmax (at σ = 1e-3 that reaches 2e-4 relative here); no centre is that close
    image = render_mesh(verts, faces, cams, SoftRasterSettings(sigma=1e-5), colors)
    origins, dirs, cos = cams.rays()
    normal = torch.tensor([-0.3, 0.0, 1.0], dtype=torch.float64)
    t = -(origins @ normal) / (dirs @ normal)
    covered = image.alpha.reshape(2, -1) > 0.5
    assert covered[0].all() and covered[1].float().mean() > 0.9      # the quad fills the views (a corner of view 2 sees past it)
    assert torch.allclose(image.depth.reshape(2, -1)[covered], (t * cos)[covered], rtol=1e-9)
    opaque = image.alpha.reshape(2, -1) > 1 - 1e-9                  # colour is composited over white by A
    assert torch.allclose(image.rgb.reshape(2, -1, 3)[opaque], torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64))


def test_nearer_face_wins_whatever_the_face_order():
    near, f1, red = _quad([[-1, -1, 0.5], [1, -1, 0.5], [1, 1, 0.5], [-1, 1, 0.5]], [1, 0, 0])
    far, _, blue = _quad([[-2, -2, -0.5], [2, -2, -0.5], [2, 2, -0.5], [-2, 2, -0.5]], [0, 0, 1])
    cams = orbit_cameras([0.0], 0.0, 3.0, 60.0, 16, dtype=torch.float64)
    settings = SoftRasterSettings(sigma=0.01)
    for order in ((near, far, red, blue), (far, near, blue, red)):
        verts, faces = torch.cat(order[:2]), torch.cat([f1, f1 + 4])
        image = render_mesh(verts, faces, cams, settings, torch.cat(order[2:]))
        assert torch.allclose(image.rgb[0, 8, 8], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-6)
        assert image.depth[0, 8, 8] == pytest.approx(2.5)
        assert torch.allclose(image.rgb[0, 1, 1], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-6)


def test_layers_rendered_apart_combine_exactly():
    verts, faces, _ = _icosphere(0.4, subdivisions=2)
    moved = verts + torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64)
    colors = torch.rand(verts.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cams = orbit_cameras([10.0, 120.0], 30.0, 3.0, 45.0, 24, dtype=torch.float64)
    settings = SoftRasterSettings(sigma=0.5, gamma=1e-3)
    both = rasterize(torch.cat([verts, moved]), torch.cat([faces, faces + len(verts)]), cams, settings,
                     torch.cat([colors, colors.flip(1)]))
    parts = combine_fragments(rasterize(verts, faces, cams, settings, colors),
                              rasterize(moved, faces, cams, settings, colors.flip(1)))
    a, b = resolve(both, cams, settings), resolve(parts, cams, settings)
    for x, y in ((a.rgb, b.rgb), (a.alpha, b.alpha), (a.depth, b.depth)):
        assert torch.allclose(x, y, atol=1e-10)


def test_gradients_match_central_finite_differences():
    # a tetrahedron over a coloured quad, soft enough (σ = 4 px², γ = 0.05) that every output is smooth
    gen = torch.Generator().manual_seed(0)
    tet = torch.tensor([[0.0, 0.5, 0.0], [-0.5, -0.3, 0.3], [0.5, -0.3, 0.3], [0.0, -0.2, -0.5]], dtype=torch.float64)
    back, back_faces, back_colors = _quad([[-1, -1, -0.8], [1, -1, -0.8], [1, 1, -0.8], [-1, 1, -0.8]], [0.1, 0.8, 0.3])
    faces = torch.cat([torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]]), back_faces + 4])
    colors = torch.cat([torch.rand(4, 3, generator=gen, dtype=torch.float64), back_colors])
    cams = orbit_cameras([20.0, -50.0], 15.0, 3.0, 50.0, 12, dtype=torch.float64)
    settings = SoftRasterSettings(sigma=4.0, gamma=0.05)
    probe = torch.rand(3, 2, 12, 12, 3, generator=gen, dtype=torch.float64)

    def loss(v: torch.Tensor) -> torch.Tensor:
        verts = torch.cat([v, back])
        image = render_mesh(verts, faces, cams, settings, colors, lambert_shade(verts, faces))
        return (image.rgb * probe[0]).sum() + (image.alpha * probe[1, ..., 0]).sum() + (image.depth * probe[2, ..., 0]).sum()

    v = tet.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(v), v)
    numeric = torch.zeros_like(tet)
    step = 1e-6
    for i in range(4):
        for j in range(3):
            e = torch.zeros_like(tet)
            e[i, j] = step
            numeric[i, j] = (loss(tet + e) - loss(tet - e)) / (2 * step)
    assert grad.abs().max() > 1.0                     # the probe sees the tetrahedron
    assert torch.allclose(grad, numeric, rtol=1e-5, atol=1e-6)


def test_pose_per_camera_and_bad_inputs():
    verts, faces, _ = _icosphere(0.3, subdivisions=1)
    cams = orbit_cameras([0.0, 0.0], 0.0, 3.0, 40.0, 16, dtype=torch.float64)
    shifted = torch.stack([verts, verts + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)])
    alpha = render_mesh(shifted, faces, cams, SoftRasterSettings(sigma=0.01)).alpha
    # the same camera sees the second pose further right (+x world = +u)
    cols = torch.arange(16, dtype=torch.float64)
    centroid = [(alpha[i].sum(0) * cols).sum() / alpha[i].sum() for i in range(2)]
    assert centroid[1] > centroid[0] + 3
    with pytest.raises(ValueError, match="one pose per camera"):
        rasterize(shifted[:1].expand(3, -1, -1), faces, cams, SoftRasterSettings())
    with pytest.raises(ValueError, match="sigma and gamma"):
        SoftRasterSettings(sigma=0.0)
