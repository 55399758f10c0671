"""Cameras: look-at orientation, projection by the pinhole formula, rays that project back onto their pixels."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.core.render.camera import focal_from_fov, look_at, orbit_cameras


def test_look_at_from_plus_z_points_right_down_forward():
    rotation = look_at(torch.tensor([[0.0, 0.0, 3.0]]), torch.zeros(1, 3))[0]
    # right = +x, down = −y (world up is image up), forward = −z (towards the origin)
    assert torch.allclose(rotation, torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]), atol=1e-6)


def test_orbit_eye_positions_and_projection_formula():
    cams = orbit_cameras([0.0, 90.0], [0.0, 30.0], 2.0, 60.0, 64)
    assert torch.allclose(cams.eye[0], torch.tensor([0.0, 0.0, 2.0]), atol=1e-6)
    assert torch.allclose(cams.eye[1], torch.tensor([2 * math.cos(math.pi / 6), 1.0, 0.0]), atol=1e-6)
    f = focal_from_fov(60.0, 64)
    assert f == pytest.approx(32 / math.tan(math.pi / 6))
    uv, z = cams.project(torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.2, 0.0]]))
    assert torch.allclose(uv[:, 0], torch.tensor([32.0, 32.0]).expand(2, 2), atol=1e-4)   # target at the centre
    # camera 0 sees (0.3, 0.2, 0) at depth 2: u = f·0.3/2 + 32, v = −f·0.2/2 + 32 (+y is up, v grows down)
    assert torch.allclose(uv[0, 1], torch.tensor([f * 0.15 + 32, -f * 0.1 + 32]), atol=1e-4)
    assert z[0, 1] == pytest.approx(2.0)


def test_rays_project_back_onto_their_pixel_centres():
    cams = orbit_cameras([30.0, 200.0], [10.0, -25.0], 3.0, 45.0, (8, 6), target=(0.1, -0.2, 0.3))
    origins, dirs, cos = cams.rays()
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(2, 48), atol=1e-6)
    points = origins + 2.5 * dirs
    uv, z = cams.project(points)
    assert torch.allclose(uv, cams.pixel_centres().expand(2, 48, 2), atol=1e-4)
    assert torch.allclose(z, 2.5 * cos, atol=1e-5)                      # depth = t · cos


def test_bad_camera_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="field of view"):
        focal_from_fov(180.0, 64)
    with pytest.raises(ValueError, match="distance"):
        orbit_cameras([0.0], 0.0, -1.0, 40.0, 32)
    with pytest.raises(ValueError, match="one elevation per azimuth"):
        orbit_cameras([0.0, 10.0], [0.0, 1.0, 2.0], 2.0, 40.0, 32)
