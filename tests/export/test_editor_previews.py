"""Export previews in a real browser: the editor (1.58.1) loads the export_mesh template's GLB into its 3D
viewer and plays SaveVideo's MP4 on the node, from what our nodes return and /view serves. Same server and chromium
setup as tests/browser (built-in packs, the real graphs/ folder)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from test_editor import (  # noqa: E402  (tests/browser holds the shared chromium helpers)
    ARTIFACTS,
    CHROMIUM,
    HAVE_CHROMIUM,
    REPO,
    PageLog,
    _free_port,
    _open_graph_file,
    run_in_chromium,
    serve_in_thread,
)

from fewstep.app.config import Config  # noqa: E402
from fewstep.app.registry import load_registry  # noqa: E402
from fewstep.app.server import create_app  # noqa: E402

pytestmark = pytest.mark.skipif(not HAVE_CHROMIUM, reason=f"chromium not found at {CHROMIUM}")


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.storage import JobStore

    config = Config(home=tmp_path_factory.mktemp("home"), port=_free_port(), auth_token=None)
    config.ensure_dirs()
    registry = load_registry([], entry_points=False, builtin=True)
    app = create_app(config, registry, Executor(registry, CacheSet(config.cache), config.paths()),
                     JobStore(config.db_path))
    for url in serve_in_thread(app, config.port):
        yield url, config.paths().output_dir


def test_mesh_template_and_saved_video_preview_in_the_editor(real_server: tuple[str, Path], tmp_path: Path) -> None:
    url, output_dir = real_server
    _write_articulated_glb(output_dir / "articulated" / "cabinet.glb")
    _write_articulated_glb(output_dir.parent / "input" / "3d" / "cabinet.glb")
    log = PageLog(url)
    run_in_chromium(tmp_path / "chromium-profile", ARTIFACTS / "export-previews.png", log,
                    lambda page: _scenario(page, url, log, tmp_path), timeout_ms=60_000)
    # Load3D ran on the viewer's capture (uploaded to temp/threed/), not on a headless render
    captured = sorted(p.name for p in (output_dir.parent / "temp" / "threed").glob("*.png"))
    assert any(name.startswith("scene") for name in captured) and any("mask" in n for n in captured), captured


def _write_articulated_glb(path: Path) -> None:
    """A box with a hinged lid and a drawer as an animated GLB (what SaveGLB writes for an ArticulatedMesh)."""
    from fewstep.nodes.core.mesh import ArticulatedMesh, Joint
    from fewstep.nodes.core.mesh_io import save_articulated_glb
    from fewstep.nodes.export.primitives import primitive_mesh

    body, lid = primitive_mesh("cube", 16, 0.5, "grey"), primitive_mesh("cylinder", 16, 0.3, "red")
    lid = lid.transformed(torch.eye(3), torch.tensor([0.0, 0.6, 0.0]))
    joints = (Joint("hinge", "revolute", (1.0, 0.0, 0.0), (0.0, 0.4, -0.4), (0.0, 1.2), "body", "lid"),)
    save_articulated_glb(ArticulatedMesh({"body": body, "lid": lid}, joints), path)


def _write_clip_graph(folder: Path) -> Path:
    """An API graph (the editor opens those too): 6 flat 64x64 frames -> CreateVideo -> SaveVideo as mp4 and
    as gif."""
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 6,
                                                         "color": 0x3366CC}},
             "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 6}},
             "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "video/fewstep",
                                                        "format": "mp4", "codec": "h264"}},
             "4": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "video/fewstep",
                                                        "format": "gif", "codec": "auto"}}}
    path = folder / "clip.json"
    path.write_text(json.dumps(graph))
    return path


def _scenario(page: Any, server: str, log: PageLog, folder: Path) -> None:
    page.goto(server + "/")
    page.wait_for_function("() => window.app?.graph && window.LiteGraph?.registered_node_types?.SaveGLB")
    page.wait_for_timeout(1500)
    _open_graph_file(page, REPO / "graphs" / "export_mesh.ui.json", "SaveGLB")
    with page.expect_response(lambda r: "/api/view" in r.url and ".glb" in r.url and r.status == 200) as glb:
        page.click("[data-testid='queue-button']")
    assert glb.value.headers["content-type"] == "model/gltf-binary"
    # the editor's SaveGLB extension took our {"3d": [ref]} and pointed its viewer at the file
    page.wait_for_function("""() => {
        const node = window.app.graph._nodes.find(n => n.type === 'SaveGLB');
        return node?.properties?.['Last Time Model File'] === 'mesh/fewstep_00001_.glb'
            && node.properties['Last Time Model Folder'] === 'output'
            && node.widgets?.some(w => w.type === 'load3D');
    }""")
    page.wait_for_timeout(2000)                                        # let the viewer draw the torus
    page.screenshot(path=str(ARTIFACTS / "export-mesh.png"))
    _open_graph_file(page, _write_clip_graph(folder), "SaveVideo")
    with page.expect_response(lambda r: "/api/view" in r.url and ".mp4" in r.url and r.status in (200, 206)) as mp4:
        page.click("[data-testid='queue-button']")
    assert mp4.value.headers["content-type"] == "video/mp4"
    # {"images": [ref], "animated": [true]} -> a <video> on the node that the browser decodes
    page.wait_for_function("""() => [...document.querySelectorAll('video')].some(
        v => v.src.includes('.mp4') && v.readyState >= 2 && v.videoWidth === 64)""")
    # a GIF comes back as {"video": [ref]}: frontend/video.js shows it in an <img> (a <video> cannot play GIF)
    page.wait_for_function("""() => [...document.querySelectorAll('img.fewstep-video')].some(
        img => img.src.includes('.gif') && img.complete && img.naturalWidth === 64)""")
    # an articulated (animated) GLB in the viewer through Preview3D's {"result": [path, ...]}
    articulated = {"1": {"class_type": "Preview3D", "inputs": {"model_file": "articulated/cabinet.glb"}}}
    (folder / "articulated.json").write_text(json.dumps(articulated))
    assert page.locator("button[aria-label='Playback speed']").count() == 0   # none for the static torus
    _open_graph_file(page, folder / "articulated.json", "Preview3D")
    with page.expect_response(lambda r: "cabinet.glb" in r.url and r.status == 200):
        page.click("[data-testid='queue-button']")
    page.wait_for_function("""() => window.app.graph._nodes.find(n => n.type === 'Preview3D')
        ?.widgets?.find(w => w.name === 'model_file')?.value === 'articulated/cabinet.glb'""")
    # the viewer found the joint's node animation: it shows its animation controls (play, speed, clip), which
    # it renders only for a model with animation clips
    page.wait_for_selector("button[aria-label='Playback speed']", state="attached")
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "export-articulated.png"))
    _load3d_captures_the_viewer(page, folder)
    assert log.page_errors == [], log.page_errors
    assert log.failed == [], log.failed
    assert log.external == [], log.external
    assert log.console_errors == [], log.console_errors


def _load3d_captures_the_viewer(page: Any, folder: Path) -> None:
    """Load3D in the editor: on Run the viewer's capture (screenshots uploaded to temp/) is its image input,
    and our node turns it into IMAGE: a 96x80 view reaches PreviewImage."""
    graph = {"1": {"class_type": "Load3D", "inputs": {"model_file": "3d/cabinet.glb", "image": {}, "width": 96,
                                                      "height": 80}},
             "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    (folder / "load3d.json").write_text(json.dumps(graph))
    _open_graph_file(page, folder / "load3d.json", "Load3D")
    page.wait_for_timeout(2000)                                         # the viewer loads the model
    with page.expect_response(lambda r: "/api/view" in r.url and "ComfyUI_temp_" in r.url and r.status == 200):
        page.click("[data-testid='queue-button']")
    page.wait_for_function("""() => {
        const node = window.app.graph._nodes.find(n => n.type === 'PreviewImage');
        return node?.imgs?.length && node.imgs[0].complete && node.imgs[0].naturalWidth === 96
            && node.imgs[0].naturalHeight === 80;
    }""")
