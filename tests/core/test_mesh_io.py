"""Mesh files (fewstep.nodes.core.mesh_io): GLB/OBJ/PLY round trips through trimesh with vertex colours and
metadata, and articulated GLB whose node animations move each part exactly as its joint does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fewstep.nodes.core.mesh import ArticulatedMesh, Joint, Mesh, mesh_from_sdf_grid
from fewstep.nodes.core.mesh_io import (
    MESH_FORMATS,
    joint_keyframes,
    load_articulated_glb,
    load_mesh,
    quaternion_angle,
    read_accessor,
    read_glb,
    save_articulated_glb,
    save_mesh,
)

trimesh = pytest.importorskip("trimesh")
META = {"prompt": json.dumps({"3": {"class_type": "SaveGLB"}}), "workflow": "two\nlines é"}


def _coloured_sphere() -> Mesh:
    axis = torch.linspace(-1, 1, 20)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    return mesh_from_sdf_grid((x**2 + y**2 + z**2).sqrt() - 0.7, (-1.0, 1.0), lambda p: (p + 1) / 2)


@pytest.mark.parametrize("fmt", MESH_FORMATS)
def test_round_trip_geometry_colours_metadata(tmp_path: Path, fmt: str) -> None:
    mesh = _coloured_sphere()
    back, metadata = load_mesh(save_mesh(mesh, tmp_path / f"sphere.{fmt}", fmt, META))  # type: ignore[arg-type]
    assert (back.num_vertices, back.num_faces) == (mesh.num_vertices, mesh.num_faces)
    torch.testing.assert_close(back.vertices, mesh.vertices, atol=1e-6, rtol=0)  # OBJ prints 8 digits
    assert torch.equal(back.faces, mesh.faces)
    # colours are stored as 8-bit: at most half a step off
    assert back.vertex_colors is not None
    assert float((back.vertex_colors - mesh.vertex_colors).abs().max()) <= 0.5 / 255 + 1e-6
    assert metadata == META


def test_glb_uses_comfyui_asset_extras_and_loads_in_plain_trimesh(tmp_path: Path) -> None:
    path = save_mesh(_coloured_sphere(), tmp_path / "m.glb", "glb", META)
    tree, _ = read_glb(path)
    assert tree["asset"]["extras"] == META and tree["asset"]["version"] == "2.0"
    assert "COLOR_0" in tree["meshes"][0]["primitives"][0]["attributes"]
    assert trimesh.load(str(path), force="mesh").is_watertight


def test_uncoloured_mesh_and_errors(tmp_path: Path) -> None:
    plain = Mesh(torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float32), torch.tensor([[0, 1, 2]]))
    back, metadata = load_mesh(save_mesh(plain, tmp_path / "t.ply", "ply"))
    assert back.vertex_colors is None and metadata == {}
    with pytest.raises(FileNotFoundError, match="nope.glb"):
        load_mesh(tmp_path / "nope.glb")
    (tmp_path / "bad.glb").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.glb"):
        load_mesh(tmp_path / "bad.glb")
    with pytest.raises(ValueError, match="unknown mesh format 'stl'"):
        save_mesh(plain, tmp_path / "t.stl", "stl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="str to str"):
        save_mesh(plain, tmp_path / "t.glb", "glb", {"prompt": {"1": 2}})  # type: ignore[dict-item]


def _box(lo: list[float], hi: list[float], colour: tuple[float, float, float]) -> Mesh:
    tm = trimesh.creation.box(bounds=[lo, hi])
    vertices = torch.tensor(tm.vertices, dtype=torch.float32)
    return Mesh(vertices, torch.tensor(tm.faces, dtype=torch.int64), torch.tensor([colour]).expand(8, 3).clone())


def _cabinet() -> ArticulatedMesh:
    """A body, a lid hinged on its back edge (with a knob sliding along the lid) and a drawer."""
    parts = {"body": _box([-1, -1, -1], [1, 0, 1], (0.6, 0.4, 0.2)),
             "lid": _box([-1, 0, -1], [1, 0.1, 1], (0.2, 0.6, 0.2)),
             "knob": _box([-0.1, 0.1, 0.7], [0.1, 0.2, 0.9], (0.9, 0.9, 0.1)),
             "drawer": _box([-0.5, -0.8, -0.5], [0.5, -0.2, 1.0], (0.2, 0.2, 0.8))}
    axis = (1 / math.sqrt(2), 0.0, 1 / math.sqrt(2))
    joints = (Joint("hinge", "revolute", (1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (-0.2, 2.0), "body", "lid"),
              Joint("knob_slide", "prismatic", (-1.0, 0.0, 0.0), (0.0, 0.1, 0.8), (0.0, 0.6), "lid", "knob"),
              Joint("drawer_slide", "prismatic", axis, (0.0, 0.0, 0.0), (0.0, 0.7), "body", "drawer"))
    return ArticulatedMesh(parts, joints)


def _quaternion_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _world_vertices_at_key(path: Path, key: int) -> dict[str, np.ndarray]:
    """Evaluate the GLB as a glTF viewer does at keyframe ``key`` of every animation: each node's local
    matrix T · R from its (animated) translation/rotation, composed from the root down."""
    tree, binary = read_glb(path)
    nodes = tree["nodes"]
    trs = {i: (np.array(n.get("translation", [0, 0, 0]), float), np.array(n.get("rotation", [0, 0, 0, 1]), float))
           for i, n in enumerate(nodes)}
    for animation in tree["animations"]:
        (channel,), (sampler,) = animation["channels"], animation["samplers"]
        value = read_accessor(tree, binary, sampler["output"])[key].astype(float)
        t, r = trs[channel["target"]["node"]]
        trs[channel["target"]["node"]] = (value, r) if channel["target"]["path"] == "translation" else (t, value)
    parent = {child: i for i, n in enumerate(nodes) for child in n.get("children", [])}
    scene = trimesh.load(str(path), force="scene", process=False)

    def world(i: int) -> np.ndarray:
        local = np.eye(4)
        local[:3, :3], local[:3, 3] = _quaternion_matrix(trs[i][1]), trs[i][0]
        return world(parent[i]) @ local if i in parent else local

    out = {}
    for i, node in enumerate(nodes):
        local_vertices = np.asarray(scene.geometry[node["name"]].vertices)
        matrix = world(i)
        out[node["name"]] = local_vertices @ matrix[:3, :3].T + matrix[:3, 3]
    return out


def test_articulated_glb_animations_move_parts_as_the_joints(tmp_path: Path) -> None:
    articulated = _cabinet()
    path = save_articulated_glb(articulated, tmp_path / "cabinet.glb", META)
    tree, binary = read_glb(path)
    assert [n["name"] for n in tree["nodes"]] == ["body", "lid", "knob", "drawer"]
    assert [a["name"] for a in tree["animations"]] == ["hinge", "knob_slide", "drawer_slide"]
    assert tree["asset"]["extras"] == META
    paths = {a["name"]: a["channels"][0]["target"]["path"] for a in tree["animations"]}
    assert paths == {"hinge": "rotation", "knob_slide": "translation", "drawer_slide": "translation"}
    # the hinge's keyframes sweep its limits and back, about its own axis
    hinge = tree["animations"][0]["samplers"][0]
    angles = [quaternion_angle(q, (1.0, 0.0, 0.0)) for q in read_accessor(tree, binary, hinge["output"])]
    times, values = joint_keyframes(articulated.joints[0])
    np.testing.assert_allclose(angles, values, atol=1e-6)
    np.testing.assert_allclose(read_accessor(tree, binary, hinge["input"])[:, 0], times, atol=1e-6)
    assert min(angles) == pytest.approx(-0.2, abs=1e-6) and max(angles) == pytest.approx(2.0, abs=1e-6)
    # at several keys, every part sits where ArticulatedMesh.posed puts it for those joint values
    for key in (0, 5, 16, 25):
        rendered = _world_vertices_at_key(path, key)
        pose = {j.name: float(joint_keyframes(j)[1][key]) for j in articulated.joints}
        for name, part in articulated.posed(pose).items():
            np.testing.assert_allclose(rendered[name], part.vertices.numpy(), atol=1e-5, err_msg=f"{name} @ {key}")


def test_articulated_glb_reads_back_parts_and_joints(tmp_path: Path) -> None:
    articulated = _cabinet()
    back = load_articulated_glb(save_articulated_glb(articulated, tmp_path / "c.glb"))
    assert back.joints == articulated.joints
    for name, part in articulated.parts.items():
        torch.testing.assert_close(back.parts[name].vertices, part.vertices, atol=1e-6, rtol=0)
        assert back.parts[name].vertex_colors is not None
