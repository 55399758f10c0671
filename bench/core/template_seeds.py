"""Which noise seed an example graph shows, by a stated rule (docs/templates.md, "Example seeds").

    python -m fewstep.bench.core.template_seeds [--graphs graphs/] [--seeds 8] [NAME ...]

For each graph (default: ``default`` and every ``*_default``) it runs the graph once per noise seed
0, 1, ..., seeds-1 (the RandomNoise node's ``noise_seed``; everything else as saved, loaders and prompt
encodings cached between runs) and asks the zoo's attribute probe whether it reads the prompt's scene in the
first output image exactly: the object count, and each object's colour and shape slot by slot. It prints one
line per seed and the rule's pick: the first seed read correctly, or "none" (then the graph shows a batch of 4).
It changes no file.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

SEED_NODE = "RandomNoise"
PROMPT_NODE = "CLIPTextEncode"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fewstep.bench.core.template_seeds",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="graph names (default: default and every *_default)")
    p.add_argument("--graphs", type=Path, default=Path("graphs"), help="folder of the API graphs (graphs/)")
    p.add_argument("--seeds", type=int, default=8, help="noise seeds tried, from 0 (8)")
    return p


def seed_and_prompt(graph: dict[str, Any]) -> tuple[str, str]:
    """(id of the graph's one RandomNoise node, the first prompt of the built-in scene grammar)."""
    from fewstep.nodes.zoo import data

    seeds = [i for i, n in graph.items() if n["class_type"] == SEED_NODE]
    prompts = [n["inputs"]["text"] for n in graph.values()
               if n["class_type"] == PROMPT_NODE and data.parse_caption(n["inputs"].get("text", "")) is not None]
    if len(seeds) != 1 or not prompts:
        raise ValueError(f"need one {SEED_NODE} node and a prompt of the scene grammar; found {len(seeds)} / "
                         f"{len(prompts)}")
    return seeds[0], prompts[0]


def first_images(graph: dict[str, Any], seeds: range, out: Path) -> list[Any]:
    """The first output image (IMAGE [1, H, W, 3]) of the graph at each noise seed, in one executor."""
    import uuid

    import numpy as np
    import torch
    from PIL import Image

    from fewstep.app.api import use_paths
    from fewstep.app.cache import CacheSet
    from fewstep.app.cli import output_files
    from fewstep.app.config import Config
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Config(home=out).paths()
    with use_paths(paths):
        registry = load_registry([], entry_points=False, builtin=True)
    executor = Executor(registry, CacheSet("lru:64"), paths)
    node, _ = seed_and_prompt(graph)
    images = []
    for seed in seeds:
        prompt = copy.deepcopy(graph)
        prompt[node]["inputs"]["noise_seed"] = seed
        result = executor.execute(prompt, prompt_id=str(uuid.uuid4()))
        if result.status != "success":
            raise RuntimeError(f"seed {seed}: {result.error}")
        png = output_files(result.outputs, paths)[0]
        array = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32) / 255.0
        images.append(torch.from_numpy(array)[None])
    return images


def main(argv: list[str] | None = None) -> int:
    from fewstep.nodes.core.compare import parsed_scenes, probe_reads

    args = _parser().parse_args(argv)
    names = args.names or ["default", *sorted(p.stem for p in args.graphs.glob("*_default.json"))]
    for name in names:
        graph = json.loads((args.graphs / f"{name}.json").read_text())
        try:
            _, text = seed_and_prompt(graph)
        except ValueError as exc:
            sys.stdout.write(f"{name}: skipped ({exc})\n")
            continue
        with tempfile.TemporaryDirectory(prefix=f"fewstep-seeds-{name}-") as tmp:
            images = first_images(graph, range(args.seeds), Path(tmp))
        reads = [probe_reads(image, parsed_scenes([text]))[0] for image in images]
        for seed, ok in enumerate(reads):
            sys.stdout.write(f"{name}: seed {seed}: {'reads' if ok else 'does not read'} {text!r}\n")
        pick = next((str(seed) for seed, ok in enumerate(reads) if ok), "none (show a batch of 4)")
        sys.stdout.write(f"{name}: pick {pick}; {sum(reads)} of {len(reads)} seeds read\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
