"""What the 3D nodes do: save a MESH under output/, point the editor's viewer at a file, and load a 3D file
with views for image nodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fewstep.app.api import current_paths, release_output, safe_child
from fewstep.nodes.core.mesh import ArticulatedMesh, Mesh
from fewstep.nodes.core.mesh_io import load_mesh, save_articulated_glb, save_mesh
from fewstep.nodes.export.files import input_file, merged_metadata, output_slot
from fewstep.nodes.export.preview import merge_parts, render_mesh

PREVIEW_PREFIX = "preview3d/fewstep"


def require_mesh(value: object, name: str = "mesh") -> Mesh | ArticulatedMesh:
    if not isinstance(value, (Mesh, ArticulatedMesh)):
        raise ValueError(f"{name} must be a MESH (fewstep.nodes.core.mesh.Mesh or ArticulatedMesh), "
                         f"got {type(value).__name__}")
    return value


def save_mesh_output(mesh: object, filename_prefix: str, format: str, prompt: Any, extra_pnginfo: Any,
                     kind: str = "output") -> dict[str, str]:
    """Save as ``<prefix>_<counter:05>_.<format>`` with the graph inside; returns the file reference
    ``{filename, subfolder, type}`` (SaveGLB's ``ui`` is ``{"3d": [ref]}``, which the editor's SaveGLB
    viewer loads). An articulated mesh becomes an animated GLB, or its joined rest pose in OBJ / PLY."""
    value = require_mesh(mesh)
    if format not in ("glb", "obj", "ply"):
        raise ValueError(f"format must be glb, obj or ply, got {format!r}")
    metadata = merged_metadata({}, prompt, extra_pnginfo)
    slot = output_slot(filename_prefix, f".{format}", prompt=prompt, kind=kind)
    name = slot.filename(f".{format}")
    try:
        if isinstance(value, ArticulatedMesh) and format == "glb":
            save_articulated_glb(value, slot.folder / name, metadata)
        else:
            save_mesh(merge_parts(value), slot.folder / name, format, metadata)  # type: ignore[arg-type]
    finally:
        release_output(slot.folder / name)
    return slot.item(name)


def preview_model_file(model_file: str, mesh: object, prompt: Any, extra_pnginfo: Any) -> str:
    """The output-relative path the editor's Preview3D viewer loads: a linked MESH is saved first under
    ``output/preview3d/`` (the viewer reads only the output folder, as ComfyUI's Preview3D does); else
    ``model_file`` must name an existing file inside output/."""
    if mesh is not None:
        item = save_mesh_output(mesh, PREVIEW_PREFIX, "glb", prompt, extra_pnginfo)
        return f"{item['subfolder']}/{item['filename']}" if item["subfolder"] else item["filename"]
    if not model_file:
        raise ValueError("Preview3D needs a model_file (a path inside output/, e.g. from SaveGLB) or a MESH link")
    relative = model_file.replace("\\", "/")
    path = safe_child(current_paths().output_dir, relative, "model_file")
    if not path.is_file():
        raise FileNotFoundError(f"model_file {model_file!r} not found in the output folder")
    return relative


def load_3d_outputs(model_file: str, capture: dict | None, width: int, height: int) -> tuple[Any, ...]:
    """Load3D's outputs (image, mask, mesh_path, normal, camera_info, recording_video, mesh).

    With the editor's capture record (``{"image", "mask", "normal", "camera_info", "recording"}``, files in
    temp/), its views; without one, an orthographic render of the mesh (shaded image, coverage mask with 1 on
    the object, camera-space normals as (n + 1) / 2)."""
    path = input_file(model_file, "3D model")
    mesh, _ = load_mesh(path)
    if capture and capture.get("image"):
        image, mask, normal = _captured_views(capture)
    else:
        rgb, cover = render_mesh(mesh, width, height)
        normal_rgb, _ = render_mesh(mesh, width, height, mode="normal")
        image, normal = _image(rgb), _image(normal_rgb)
        mask = torch.from_numpy(cover)[None]
    recording = None
    if capture and capture.get("recording"):
        from fewstep.nodes.core.video_io import load_video

        recording = load_video(input_file(capture["recording"], "recording"))
    camera = capture.get("camera_info") if capture else None
    return image, mask, model_file, normal, camera, recording, mesh


def _image(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]


def _captured_views(capture: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The viewer's uploaded screenshots through core's LoadImage (annotated ``name [temp]`` paths)."""
    from fewstep.nodes.core.nodes import LoadImage

    image, _ = LoadImage.execute(capture["image"]).values
    _, mask = LoadImage.execute(capture.get("mask") or capture["image"]).values
    normal = LoadImage.execute(capture["normal"]).values[0] if capture.get("normal") else image
    return image, mask, normal
