"""The renderer on a CUDA device gives the CPU's images and gradients (float64, so the two agree to rounding)."""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.core.render.camera import orbit_cameras
from fewstep.nodes.core.render.raster import SoftRasterSettings, lambert_shade, render_mesh
from fewstep.nodes.core.render.triplane import Triplane, TriplaneDecoder, TriplaneDecoderConfig
from fewstep.nodes.core.render.volume import NeuSAlpha, VolumeSettings, render_field

pytestmark = pytest.mark.gpu


def _octahedron(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    verts = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64) * 0.6
    faces = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    colors = torch.rand(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return verts.to(device), faces.to(device), colors.to(device)


def _mesh_loss(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    verts, faces, colors = _octahedron(device)
    verts = verts.clone().requires_grad_(True)
    cams = orbit_cameras([15.0, 140.0], 25.0, 3.0, 45.0, 32, dtype=torch.float64, device=device)
    image = render_mesh(verts, faces, cams, SoftRasterSettings(sigma=1.0, gamma=1e-2), colors, lambert_shade(verts, faces))
    loss = image.rgb.sum() + image.alpha.sum() + image.depth.sum()
    (grad,) = torch.autograd.grad(loss, verts)
    return torch.cat([image.rgb.flatten(), image.alpha.flatten()]).detach().cpu(), grad.cpu()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_soft_rasteriser_matches_the_cpu_on_cuda():
    cpu_image, cpu_grad = _mesh_loss("cpu")
    gpu_image, gpu_grad = _mesh_loss("cuda")
    assert torch.allclose(cpu_image, gpu_image, atol=1e-9)
    assert torch.allclose(cpu_grad, gpu_grad, rtol=1e-7, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triplane_volume_render_matches_the_cpu_on_cuda():
    torch.manual_seed(0)
    decoder = TriplaneDecoder(TriplaneDecoderConfig(channels=4, hidden=16)).double()
    planes = 0.1 * torch.randn(3, 4, 8, 8, dtype=torch.float64)
    settings = VolumeSettings(samples=32, importance=16, density=NeuSAlpha(64.0))
    out = {}
    for device in ("cpu", "cuda"):
        cams = orbit_cameras([0.0, 90.0], 20.0, 3.0, 40.0, 16, dtype=torch.float64, device=device)
        image = render_field(Triplane(planes.to(device), decoder.to(device)).field, cams, settings)
        out[device] = torch.cat([image.rgb.flatten(), image.opacity.flatten(), image.depth.flatten()]).cpu()
    assert torch.allclose(out["cpu"], out["cuda"], atol=1e-8)
