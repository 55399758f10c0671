"""Evidence for PRD at demo scale: caption accuracy of renders (the probe reads colour and shape back),
shape validity of the extracted meshes, and seconds per object (text → K steps → triplane → mesh).

Our analogue of the paper's Table 1 / ablations (CLIP score and R@1 on DreamFusion prompts): every one of
the 24 captions is generated once (fixed noise per caption), rendered from four views 90° apart at 15°
elevation, and read by the multi-view teacher's caption probe (``nodes.zoo.multiview.evaluate``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from fewstep.nodes.core.mesh import Mesh, mesh_from_sdf_grid
from fewstep.nodes.core.render.triplane import Triplane, sample_triplane, sdf_grid
from fewstep.nodes.prd.generator import TriplaneGenerator, generate
from fewstep.nodes.prd.train import render_triplane_views
from fewstep.nodes.zoo.multiview.data import ViewSpec, all_primitives
from fewstep.nodes.zoo.multiview.evaluate import CaptionProbe, read_captions

EVAL_VIEWS = torch.tensor([[0.0, 15.0], [90.0, 15.0], [180.0, 15.0], [270.0, 15.0]])


def triplane_mesh(triplane: Triplane, resolution: int = 48, index: int = 0) -> Mesh:
    """Marching cubes of object ``index``'s SDF on a resolution³ grid, vertex colours from the decoder."""
    planes = triplane.planes if triplane.planes.ndim == 5 else triplane.planes[None]

    def colour(points: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pts = points.to(planes.dtype)[None]
            return triplane.decoder(sample_triplane(planes[index:index + 1], pts, triplane.bound), pts)[1][0]

    grid = sdf_grid(triplane, resolution, index)
    return mesh_from_sdf_grid(grid, (-triplane.bound, triplane.bound), colour)


def is_watertight(mesh: Mesh) -> bool:
    """Every undirected edge is shared by exactly two faces (a closed 2-manifold surface)."""
    if mesh.num_faces == 0:
        return False
    f = mesh.faces
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    return bool((counts == 2).all())


def mesh_validity(triplane: Triplane, resolution: int = 32, index: int = 0) -> dict[str, bool]:
    """non_empty: the SDF crosses zero; watertight: see :func:`is_watertight`; inside: the surface does not
    touch the cube's border (the object is not clipped). valid = all three."""
    grid = sdf_grid(triplane, resolution, index)
    non_empty = bool(grid.min() < 0 < grid.max())
    border = torch.cat([grid[[0, -1]].flatten(), grid[:, [0, -1]].flatten(), grid[:, :, [0, -1]].flatten()])
    inside = bool(border.min() > 0)
    watertight = non_empty and is_watertight(mesh_from_sdf_grid(grid, (-triplane.bound, triplane.bound)))
    return {"non_empty": non_empty, "watertight": watertight, "inside": inside,
            "valid": non_empty and watertight and inside}


@torch.no_grad()
def evaluate_generator(gen: TriplaneGenerator, probe: CaptionProbe, embed: Callable[[list[str]], torch.Tensor],
                       k: int, seed: int = 123, mesh_resolution: int = 32) -> dict[str, float]:
    """Caption accuracy (colour, shape, both) over 24 captions x 4 views, mesh validity, seconds per object."""
    prims = all_primitives()
    device = next(gen.parameters()).device
    text, probe = embed([p.caption() for p in prims]).to(device), probe.to(device)
    gen_noise = torch.Generator().manual_seed(seed)
    colour = shape = both = valid = 0
    seconds = 0.0
    for i, prim in enumerate(prims):
        noise = torch.randn((1, *gen.latent_shape), generator=gen_noise).to(device)
        start = time.perf_counter()
        triplane = generate(gen, text[i:i + 1], k, noise)
        check = mesh_validity(triplane, mesh_resolution)
        seconds += time.perf_counter() - start
        valid += check["valid"]
        images = render_triplane_views(triplane, EVAL_VIEWS.to(device), ViewSpec().size, 48, 0.01, None)
        for read in read_captions(probe, images):
            colour += read.colour == prim.colour
            shape += read.shape == prim.shape
            both += read == prim
    n = len(prims) * len(EVAL_VIEWS)
    return {"caption_accuracy": round(both / n, 4), "colour_accuracy": round(colour / n, 4),
            "shape_accuracy": round(shape / n, 4), "valid_meshes": round(valid / len(prims), 4),
            "seconds_per_object": round(seconds / len(prims), 4), "objects": len(prims)}
