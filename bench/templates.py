"""Regenerate the template library's generated files: UI twins, thumbnails and the lock.

    python -m fewstep.bench.templates [--graphs graphs/] [--all] [--check] [NAME ...]

For every API graph ``graphs/<name>.json`` (or the NAMEs given):
- ``<name>.ui.json``, the UI twin, from ``fewstep.app.templates.api_to_ui`` (always rewritten: cheap);
- ``<name>.png``, the thumbnail: the graph is run with ``fewstep run`` (a fresh home, so trainers start
  from scratch) and its first output file becomes the picture: an image (or a video's first frame) scaled to
  256 px (nearest neighbour: demo images are 64 px and should stay crisp), a mesh (GLB/OBJ/PLY) rendered
  at 256 px by the export pack's shaded orthographic view. Only graphs whose sha256 differs from the lock,
  or without a thumbnail, are run unless ``--all``;
- ``templates.lock.json``: the sha256 of graph, twin and thumbnail.

``--check`` changes nothing and exits 1 when any twin, thumbnail or lock entry is stale (for CI).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fewstep.app.templates import LOCK, UI_SUFFIX, api_graph_names, api_to_ui, dump_json, sha256_file

if TYPE_CHECKING:
    from PIL import Image as PILImage

THUMBNAIL_PX = 256
RUN_TIMEOUT_S = 600


def stale_entries(graphs_dir: Path, names: list[str]) -> list[str]:
    """Human-readable reasons each generated file is out of date (empty when all are current)."""
    from fewstep.app.registry import load_registry

    registry = load_registry([], entry_points=False, builtin=True)
    lock = _read_lock(graphs_dir)
    problems = []
    for name in names:
        twin = graphs_dir / f"{name}{UI_SUFFIX}"
        expected = dump_json(api_to_ui(json.loads((graphs_dir / f"{name}.json").read_text()), registry))
        if not twin.is_file() or twin.read_text() != expected:
            problems.append(f"{twin.name} is not what api_to_ui makes of {name}.json")
        entry = lock.get(name, {})
        if entry.get("graph") != sha256_file(graphs_dir / f"{name}.json"):
            problems.append(f"{name}.json changed since its thumbnail was made")
        thumb = graphs_dir / f"{name}.png"
        if not thumb.is_file() or entry.get("thumbnail") != sha256_file(thumb):
            problems.append(f"{thumb.name} is missing or not the one recorded in {LOCK}")
    return problems


def _read_lock(graphs_dir: Path) -> dict[str, dict[str, str]]:
    path = graphs_dir / LOCK
    return json.loads(path.read_text()) if path.is_file() else {}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".gif", ".webp")
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply")


def make_thumbnail(graphs_dir: Path, name: str) -> Path:
    """Run the graph headlessly and save a picture of its first output file as ``<name>.png``."""
    with tempfile.TemporaryDirectory(prefix=f"fewstep-thumb-{name}-") as tmp:
        run = subprocess.run([sys.executable, "-m", "fewstep", "run", str(graphs_dir / f"{name}.json"),
                              "--home", tmp, "--out", str(Path(tmp) / "out")],
                             capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
        outputs = [Path(line) for line in run.stdout.splitlines()
                   if line.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES + MESH_SUFFIXES)]
        if run.returncode != 0 or not outputs:
            raise RuntimeError(f"{name}: fewstep run exited {run.returncode} with no image, video or mesh\n"
                               f"{run.stderr[-2000:]}")
        target = graphs_dir / f"{name}.png"
        thumbnail_of(outputs[0]).save(target, format="PNG", optimize=True)
    return target


def thumbnail_of(path: Path) -> PILImage.Image:
    """A PIL RGB picture of an output file: an image (an animated one's first frame), a video's first frame
    (scaled up by a whole factor toward 256 px, nearest neighbour) or a mesh rendered at 256 x 256."""
    from PIL import Image

    suffix = path.suffix.lower()
    if suffix in MESH_SUFFIXES:
        from fewstep.nodes.core.mesh_io import load_mesh
        from fewstep.nodes.export.preview import render_mesh

        rgb, _ = render_mesh(load_mesh(path)[0], THUMBNAIL_PX, THUMBNAIL_PX)
        return Image.fromarray(rgb)
    if suffix in VIDEO_SUFFIXES:
        from fewstep.nodes.core.video_io import load_video, to_uint8

        image = Image.fromarray(to_uint8(load_video(path).frames[:1])[0])
    else:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    scale = max(1, THUMBNAIL_PX // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def regenerate(graphs_dir: Path, names: list[str], *, force: bool) -> None:
    from fewstep.app.registry import load_registry

    registry = load_registry([], entry_points=False, builtin=True)
    lock = _read_lock(graphs_dir)
    for name in names:
        graph = graphs_dir / f"{name}.json"
        twin = graphs_dir / f"{name}{UI_SUFFIX}"
        twin.write_text(dump_json(api_to_ui(json.loads(graph.read_text()), registry)))
        entry = lock.get(name, {})
        thumb = graphs_dir / f"{name}.png"
        if force or entry.get("graph") != sha256_file(graph) or not thumb.is_file():
            sys.stdout.write(f"running {name} for its thumbnail\n")
            make_thumbnail(graphs_dir, name)
        lock[name] = {"graph": sha256_file(graph), "ui": sha256_file(twin), "thumbnail": sha256_file(thumb)}
    (graphs_dir / LOCK).write_text(dump_json(dict(sorted(lock.items()))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fewstep bench templates", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="graphs to regenerate (default: every API graph)")
    parser.add_argument("--graphs", type=Path, default=Path("graphs"), help="graphs folder (default: graphs)")
    parser.add_argument("--all", action="store_true", help="re-run every graph for its thumbnail")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is stale")
    args = parser.parse_args(argv)
    names = args.names or api_graph_names(args.graphs)
    if args.check:
        problems = stale_entries(args.graphs, names)
        sys.stdout.write("".join(f"stale: {p}\n" for p in problems) or "all templates current\n")
        return 1 if problems else 0
    regenerate(args.graphs, names, force=args.all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
