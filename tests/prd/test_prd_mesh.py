"""Triplane → mesh: marching cubes of a sphere-like triplane SDF is a closed, non-empty mesh inside the cube
with decoder vertex colours; the watertightness check rejects an open mesh; a probe reads ground truth."""

from __future__ import annotations

import torch

from fewstep.nodes.core.mesh import Mesh
from fewstep.nodes.core.render.triplane import Triplane, TriplaneDecoder, TriplaneDecoderConfig
from fewstep.nodes.prd.evaluate import is_watertight, mesh_validity, triplane_mesh


def _sphere_triplane(radius: float = 0.45) -> Triplane:
    """Zero planes and a zeroed output layer: sdf(p) = |p| − r exactly, colour sigmoid(0) = 0.5 grey."""
    decoder = TriplaneDecoder(TriplaneDecoderConfig(channels=4, hidden=8, layers=1, sphere_radius=radius))
    with torch.no_grad():
        decoder.net[-1].weight.zero_()
        decoder.net[-1].bias.zero_()
    return Triplane(torch.zeros(1, 3, 4, 8, 8), decoder, 1.0)


def test_sphere_sdf_gives_a_watertight_coloured_mesh():
    mesh = triplane_mesh(_sphere_triplane(), resolution=24)
    assert mesh.num_faces > 100 and is_watertight(mesh)
    radii = mesh.vertices.norm(dim=-1)
    assert abs(float(radii.mean()) - 0.45) < 0.01 and float(radii.max() - radii.min()) < 0.03
    assert mesh.vertex_colors is not None
    torch.testing.assert_close(mesh.vertex_colors, torch.full_like(mesh.vertex_colors, 0.5))
    assert mesh_validity(_sphere_triplane(), 24) == {"non_empty": True, "watertight": True, "inside": True,
                                                     "valid": True}


def test_validity_flags_clipped_and_empty_objects_and_open_meshes():
    assert mesh_validity(_sphere_triplane(radius=1.5), 16)["inside"] is False        # fills the whole cube
    empty = mesh_validity(_sphere_triplane(radius=-0.1), 16)
    assert empty["non_empty"] is False and empty["valid"] is False
    closed = triplane_mesh(_sphere_triplane(), resolution=16)
    open_mesh = Mesh(closed.vertices, closed.faces[1:].contiguous())
    assert is_watertight(closed) and not is_watertight(open_mesh)


def test_bounded_decoder_keeps_the_surface_in_its_shell():
    """max_offset m < r₀: whatever the MLP outputs, the SDF is negative at the centre and positive beyond r₀ + m."""
    from fewstep.nodes.core.render.triplane import TriplaneDecoderConfig
    from fewstep.nodes.prd.generator import BoundedDecoder

    decoder = BoundedDecoder(TriplaneDecoderConfig(channels=4, hidden=8, layers=1, sphere_radius=0.45), 0.3)
    with torch.no_grad():
        decoder.net[-1].bias.fill_(50.0)                        # pushes the SDF up as far as it goes
    tri = Triplane(torch.randn(1, 3, 4, 8, 8), decoder, 1.0)
    assert mesh_validity(tri, 16)["valid"]
    with torch.no_grad():
        decoder.net[-1].bias.fill_(-50.0)                       # and down
    check = mesh_validity(tri, 16)
    assert check["valid"] and float(triplane_mesh(tri, 16).vertices.norm(dim=-1).max()) < 0.45 + 0.3 + 0.1
