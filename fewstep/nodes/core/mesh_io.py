"""Mesh files through trimesh: GLB, OBJ and PLY with vertex colours and the graph inside, and articulated
GLB (one node per part, one node animation per joint).

Metadata (text key -> text value, ComfyUI's ``prompt`` / ``workflow`` JSON) goes where each format allows:
GLB ``asset.extras`` (ComfyUI's SaveGLB layout), PLY header comments ``comment fewstep {"key": "value"}``,
OBJ header comments ``# fewstep {"key": "value"}`` (one JSON object per line).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fewstep.nodes.core.mesh import ArticulatedMesh, Joint, Mesh

MeshFormat = Literal["glb", "obj", "ply"]
MESH_FORMATS: tuple[str, ...] = ("glb", "obj", "ply")
JOINT_EXTRAS_KEY = "fewstep_joint"   # a child part's node extras: the joint that moves it
KEYFRAMES_PER_SWEEP = 16             # lower -> upper: linear steps of at most (range / 16) between keys
_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942


def to_trimesh(mesh: Mesh) -> Any:
    """A ``trimesh.Trimesh`` with the same vertices, faces and (RGBA uint8) vertex colours; no processing,
    so vertex order and count stay as they are."""
    import trimesh

    colours = None
    if mesh.vertex_colors is not None:
        rgb = np.round(mesh.vertex_colors.double().numpy() * 255).astype(np.uint8)
        colours = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), vertex_colors=colours, process=False)


def from_trimesh(tm: Any) -> Mesh:
    """A :class:`Mesh` from a ``trimesh.Trimesh`` (vertex colours kept when it has per-vertex colours)."""
    colours = None
    if getattr(tm.visual, "kind", None) == "vertex":
        colours = torch.from_numpy(np.asarray(tm.visual.vertex_colors)[:, :3].astype(np.float32) / 255.0)
    vertices = torch.from_numpy(np.asarray(tm.vertices, dtype=np.float32)).contiguous()
    faces = torch.from_numpy(np.asarray(tm.faces, dtype=np.int64)).contiguous()
    return Mesh(vertices, faces, colours)


def save_mesh(mesh: Mesh, path: Path | str, format: MeshFormat, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``mesh`` as GLB, OBJ or PLY (binary) with ``metadata``; returns the path.

    Raises ValueError for an unknown format or metadata that is not text -> text."""
    path, metadata = Path(path), _check_metadata(metadata)
    if format not in MESH_FORMATS:
        raise ValueError(f"unknown mesh format {format!r}; choose one of {', '.join(MESH_FORMATS)}")
    if mesh.num_faces == 0:
        raise ValueError("the mesh has no faces; nothing to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    tm = to_trimesh(mesh)
    if format == "glb":
        from trimesh.exchange.gltf import export_glb

        data = export_glb(tm.scene(), include_normals=False, tree_postprocessor=_asset_extras(metadata))
    elif format == "ply":
        from trimesh.exchange.ply import export_ply

        data = _ply_with_comments(export_ply(tm, encoding="binary"), metadata)
    else:
        from trimesh.exchange.obj import export_obj

        lines = [f"# fewstep {json.dumps({key: value})}" for key, value in metadata.items()]
        data = ("\n".join(lines) + "\n" + export_obj(tm, include_normals=False, header=None)).encode("utf-8")
    path.write_bytes(data)
    return path


def load_mesh(path: Path | str) -> tuple[Mesh, dict[str, str]]:
    """Read a GLB/GLTF, OBJ or PLY file into one :class:`Mesh` (a scene's parts placed and joined) and its
    metadata. Raises FileNotFoundError / ValueError naming the file."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file {path.name!r} not found")
    try:
        loaded = trimesh.load(str(path), force="mesh", process=False)
    except Exception as error:  # trimesh raises many types for a bad file
        raise ValueError(f"{path.name!r} is not a readable mesh file ({type(error).__name__}: {error})") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise ValueError(f"{path.name!r} holds no triangle mesh")
    return from_trimesh(loaded), read_mesh_metadata(path)


def read_mesh_metadata(path: Path | str) -> dict[str, str]:
    """The text metadata written by :func:`save_mesh` / :func:`save_articulated_glb` ({} when none)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".glb":
        extras = read_glb(path)[0].get("asset", {}).get("extras", {})
        return {k: v for k, v in extras.items() if isinstance(v, str)} if isinstance(extras, dict) else {}
    if suffix in (".ply", ".obj"):
        head = path.read_bytes()
        if suffix == ".ply":
            head = head[: head.find(b"end_header")]
        prefix = "comment fewstep " if suffix == ".ply" else "# fewstep "
        entries: dict[str, str] = {}
        for line in head.decode("utf-8", errors="replace").splitlines():
            if line.startswith(prefix):
                entries.update(json.loads(line[len(prefix):]))
        return entries
    return {}


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    entries = dict(metadata or {})
    for key, value in entries.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"mesh metadata must map str to str; entry {key!r} holds {type(value).__name__}")
    return entries


def _asset_extras(metadata: dict[str, str]) -> Callable[[dict], None]:
    def postprocess(tree: dict) -> None:
        tree["asset"]["generator"] = "fewstep (trimesh)"
        if metadata:
            tree["asset"]["extras"] = dict(metadata)
    return postprocess


def _ply_with_comments(data: bytes, metadata: dict[str, str]) -> bytes:
    """Insert ``comment fewstep {...}`` lines after the PLY ``format`` line (json.dumps escapes newlines)."""
    head_end = data.index(b"end_header")
    lines = data[:head_end].split(b"\n")
    comments = [f"comment fewstep {json.dumps({key: value})}".encode() for key, value in metadata.items()]
    return b"\n".join(lines[:2] + comments + lines[2:]) + data[head_end:]


# ------------------------------------------------------------------------------------------- GLB


def read_glb(path: Path | str) -> tuple[dict, bytes]:
    """(glTF JSON, BIN chunk) of a GLB file (glTF 2.0 binary container, §4.4 of the spec)."""
    data = Path(path).read_bytes()
    if len(data) < 20 or struct.unpack_from("<I", data, 0)[0] != _GLB_MAGIC:
        raise ValueError(f"{Path(path).name!r} is not a GLB file")
    json_length, json_type = struct.unpack_from("<II", data, 12)
    if json_type != _JSON_CHUNK:
        raise ValueError(f"{Path(path).name!r}: first GLB chunk is not JSON")
    tree = json.loads(data[20:20 + json_length])
    offset = 20 + json_length
    binary = b""
    if offset + 8 <= len(data):
        bin_length, bin_type = struct.unpack_from("<II", data, offset)
        if bin_type == _BIN_CHUNK:
            binary = data[offset + 8: offset + 8 + bin_length]
    return tree, binary


def read_accessor(tree: dict, binary: bytes, index: int) -> np.ndarray:
    """A float32 accessor of a GLB as an array [count, components] (what our animations write)."""
    accessor = tree["accessors"][index]
    view = tree["bufferViews"][accessor["bufferView"]]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[accessor["type"]]
    if accessor["componentType"] != 5126:
        raise ValueError("only float32 accessors are read here")
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    values = np.frombuffer(binary, dtype="<f4", count=accessor["count"] * width, offset=start)
    return values.reshape(accessor["count"], width)


def _pivot(joint: Joint | None) -> np.ndarray:
    """Where a part's node frame sits: the joint origin for a moving part, the world origin for the root."""
    return np.zeros(3) if joint is None else np.asarray(joint.origin, dtype=np.float64)


def joint_keyframes(joint: Joint) -> tuple[np.ndarray, np.ndarray]:
    """(times [2K+1] in seconds, joint values [2K+1]): lower -> upper -> lower over 2 s at K + 1 evenly
    spaced values each way (linear interpolation between keys, so a revolute sweep never takes a
    quaternion shortcut: each step turns at most (upper - lower) / K)."""
    lower, upper = joint.limits
    up = np.linspace(lower, upper, KEYFRAMES_PER_SWEEP + 1)
    values = np.concatenate([up, up[-2::-1]])
    return np.linspace(0.0, 2.0, len(values)), values


def joint_channel(joint: Joint, values: np.ndarray, rest_translation: np.ndarray) -> tuple[str, np.ndarray]:
    """The glTF animation path and keyframe outputs for joint values.

    Revolute: unit quaternions (x, y, z, w) = (k sin(θ/2), cos(θ/2)) about axis k; the node's frame
    sits on the joint origin, so rotating it turns the part about the axis line through the origin.
    Prismatic: translations rest + d · k."""
    axis = np.asarray(joint.axis, dtype=np.float64)
    if joint.kind == "revolute":
        half = values[:, None] / 2
        return "rotation", np.concatenate([axis[None] * np.sin(half), np.cos(half)], axis=1)
    return "translation", rest_translation[None] + values[:, None] * axis[None]


def save_articulated_glb(articulated: ArticulatedMesh, path: Path | str,
                         metadata: Mapping[str, str] | None = None) -> Path:
    """Write an :class:`ArticulatedMesh` as GLB: one node per part (named after it, the parts nested as the
    joint tree), each part's vertices relative to its node frame at its joint origin, and per joint one
    animation (named after the joint) sweeping its limits (:func:`joint_keyframes`). The joint's record
    sits in the child node's ``extras.fewstep_joint``; the metadata in ``asset.extras``."""
    import trimesh
    from trimesh.exchange.gltf import export_glb

    path, entries = Path(path), _check_metadata(metadata)
    by_child = {joint.child: joint for joint in articulated.joints}
    scene = trimesh.Scene()
    for name in _tree_order(articulated):
        joint = by_child.get(name)
        pivot = _pivot(joint)
        parent_pivot = _pivot(by_child.get(joint.parent)) if joint else np.zeros(3)
        part = articulated.parts[name]
        local = to_trimesh(Mesh((part.vertices - torch.from_numpy(pivot).float()).contiguous(), part.faces,
                                part.vertex_colors))
        transform = np.eye(4)
        transform[:3, 3] = pivot - parent_pivot
        scene.add_geometry(local, node_name=name, geom_name=name, transform=transform,
                           parent_node_name=joint.parent if joint else None)
    animations = _AnimationWriter(articulated, by_child)
    data = export_glb(scene, include_normals=False, buffer_postprocessor=animations.add_buffers,
                      tree_postprocessor=animations.finish(entries))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tree_order(articulated: ArticulatedMesh) -> list[str]:
    """Parts with every parent before its children (trimesh needs a parent node before its child)."""
    by_child = {joint.child: joint.parent for joint in articulated.joints}
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in by_child:
            visit(by_child[name])
        order.append(name)

    for name in articulated.parts:
        visit(name)
    return order


class _AnimationWriter:
    """Adds keyframe buffers and the ``animations`` list to trimesh's glTF tree while it is exported."""

    def __init__(self, articulated: ArticulatedMesh, by_child: dict[str, Joint]) -> None:
        self.articulated = articulated
        self.by_child = by_child

    def add_buffers(self, buffer_items: Any, tree: dict) -> None:
        node_index = {node.get("name"): index for index, node in enumerate(tree["nodes"])}
        tree["animations"] = []
        for joint in self.articulated.joints:
            child = tree["nodes"][node_index[joint.child]]
            rest = self._rest_translation(joint)
            times, values = joint_keyframes(joint)
            channel, outputs = joint_channel(joint, values, rest)
            time_accessor = self._accessor(buffer_items, tree, f"{joint.name}/t", times[:, None], "SCALAR")
            out_accessor = self._accessor(buffer_items, tree, f"{joint.name}/{channel}", outputs,
                                          "VEC4" if channel == "rotation" else "VEC3")
            tree["animations"].append({
                "name": joint.name,
                "samplers": [{"input": time_accessor, "output": out_accessor, "interpolation": "LINEAR"}],
                "channels": [{"sampler": 0, "target": {"node": node_index[joint.child], "path": channel}}],
            })
            child.pop("matrix", None)  # an animated node must use translation/rotation/scale (glTF §5.25)
            child["translation"] = rest.tolist()
            child["extras"] = {JOINT_EXTRAS_KEY: {
                "name": joint.name, "kind": joint.kind, "axis": list(joint.axis), "origin": list(joint.origin),
                "limits": list(joint.limits), "parent": joint.parent, "child": joint.child}}

    def _rest_translation(self, joint: Joint) -> np.ndarray:
        return _pivot(joint) - _pivot(self.by_child.get(joint.parent))

    @staticmethod
    def _accessor(buffer_items: Any, tree: dict, key: str, array: np.ndarray, kind: str) -> int:
        data = np.ascontiguousarray(array, dtype="<f4")
        buffer_key = f"fewstep-animation/{key}"
        buffer_items[buffer_key] = data.tobytes()  # float32 rows: always a multiple of 4 bytes
        accessor = {"bufferView": buffer_items.index(buffer_key), "componentType": 5126, "count": len(data),
                    "type": kind, "min": data.min(axis=0).tolist(), "max": data.max(axis=0).tolist()}
        index = len(tree["accessors"])
        tree["accessors"][buffer_key] = accessor
        return index

    @staticmethod
    def finish(metadata: dict[str, str]) -> Callable[[dict], None]:
        def postprocess(tree: dict) -> None:
            _asset_extras(metadata)(tree)
            if not tree.get("animations"):
                tree.pop("animations", None)
        return postprocess


def load_articulated_glb(path: Path | str) -> ArticulatedMesh:
    """Read back a file of :func:`save_articulated_glb`: parts placed in the rest pose and the joints from
    the nodes' ``extras.fewstep_joint`` records."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file {path.name!r} not found")
    tree, _ = read_glb(path)
    scene = trimesh.load(str(path), force="scene", process=False)
    parts: dict[str, Mesh] = {}
    for node in scene.graph.nodes_geometry:
        transform, geometry_name = scene.graph[node]
        placed = scene.geometry[geometry_name].copy()
        placed.apply_transform(transform)
        parts[node] = from_trimesh(placed)
    joints = [Joint(**{**node["extras"][JOINT_EXTRAS_KEY],
                       "axis": tuple(node["extras"][JOINT_EXTRAS_KEY]["axis"]),
                       "origin": tuple(node["extras"][JOINT_EXTRAS_KEY]["origin"]),
                       "limits": tuple(node["extras"][JOINT_EXTRAS_KEY]["limits"])})
              for node in tree.get("nodes", []) if JOINT_EXTRAS_KEY in node.get("extras", {})]
    return ArticulatedMesh(parts, tuple(joints))


def quaternion_angle(quaternion: np.ndarray, axis: tuple[float, float, float]) -> float:
    """The signed angle of a unit quaternion (x, y, z, w) about ``axis``: 2 atan2(v · k, w)."""
    return 2 * math.atan2(float(np.dot(quaternion[:3], axis)), float(quaternion[3]))

