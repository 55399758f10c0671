"""Template thumbnails of video and mesh outputs (fewstep.bench.templates.thumbnail_of): a video's first
frame, a mesh's shaded view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewstep.bench.templates import THUMBNAIL_PX, thumbnail_of
from fewstep.nodes.core.mesh_io import save_articulated_glb, save_mesh
from fewstep.nodes.core.video import Video
from fewstep.nodes.core.video_io import save_video
from fewstep.nodes.export.preview import BACKGROUND
from fewstep.nodes.export.primitives import primitive_mesh

pytest.importorskip("av")


@pytest.mark.parametrize("suffix", [".mp4", ".gif", ".webp"])
def test_video_thumbnail_is_the_first_frame_scaled(tmp_path: Path, suffix: str) -> None:
    frames = torch.zeros(4, 64, 64, 3)
    frames[0, :, :, 0] = 1.0            # first frame red, the rest black
    path = save_video(Video(frames, 8), tmp_path / f"clip{suffix}", suffix[1:])  # type: ignore[arg-type]
    picture = np.asarray(thumbnail_of(path))
    assert picture.shape == (THUMBNAIL_PX, THUMBNAIL_PX, 3)   # 64 px scaled by 4, nearest neighbour
    red = picture.reshape(-1, 3).mean(axis=0)
    assert red[0] > 240 and red[1] < 15 and red[2] < 15


@pytest.mark.parametrize("suffix", ["glb", "ply"])
def test_mesh_thumbnail_is_a_rendered_view(tmp_path: Path, suffix: str) -> None:
    path = save_mesh(primitive_mesh("sphere", 24, 0.6, "red"), tmp_path / f"m.{suffix}", suffix)  # type: ignore[arg-type]
    picture = np.asarray(thumbnail_of(path))
    assert picture.shape == (THUMBNAIL_PX, THUMBNAIL_PX, 3)
    covered = np.any(picture != BACKGROUND, axis=-1)
    assert 0.3 < covered.mean() < 0.9                        # the sphere fills much of the frame, not all
    centre = picture[THUMBNAIL_PX // 2, THUMBNAIL_PX // 2].astype(int)
    assert centre[0] > 2 * centre[1] and centre[0] > 2 * centre[2]   # shaded red


def test_articulated_glb_and_plain_images(tmp_path: Path) -> None:
    from fewstep.nodes.core.mesh import ArticulatedMesh, Joint

    parts = {"a": primitive_mesh("cube", 16, 0.4, "blue"), "b": primitive_mesh("sphere", 16, 0.3, "yellow")}
    joint = Joint("j", "revolute", (0.0, 1.0, 0.0), (0.0, 0.0, 0.0), (0.0, 1.0), "a", "b")
    path = save_articulated_glb(ArticulatedMesh(parts, (joint,)), tmp_path / "a.glb")
    assert np.any(np.asarray(thumbnail_of(path)) != BACKGROUND)
    Image.new("RGB", (64, 32), (0, 200, 0)).save(tmp_path / "i.png")
    assert thumbnail_of(tmp_path / "i.png").size == (256, 128)
