"""``fewstep bench load``: how long a single-file checkpoint takes to load, as inside a running server.

The heavy imports (torch, diffusers, transformers: what a server's worker imports in the background when
it starts) are done and timed first; then the file is read once to warm the page cache, and the core
loader (``nodes.core.loaders``: read, LDM -> diffusers names, networks built, weights placed on the
device in the dtype) runs ``--repeat`` times, each a fresh load (no model cache). The checkpoint is a
random-weight single file of the real SD1.5 / SDXL architecture (:mod:`bench.core.ldm_files`), written to a
temporary folder and deleted afterwards unless ``--checkpoint FILE`` is given.

Usage: ``fewstep bench load [--model sd15|sdxl] [--dtype fp16,fp32] [--device cuda|cpu] [--repeat 3]
[--checkpoint FILE] [--out DIR]``. Writes ``bench_load.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def timed_imports() -> float:
    t0 = time.perf_counter()
    from fewstep.nodes.core import warm_up

    warm_up()
    return time.perf_counter() - t0


def load_times(path: Path, dtype_name: str, device: str, repeat: int) -> list[float]:
    """Seconds per fresh load of ``path`` through the core loader (synchronised on CUDA)."""
    import gc

    import torch

    from fewstep.nodes.core.loaders import _load_sd

    dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        parts = _load_sd(path, dtype, device, None)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del parts
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return times


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fewstep bench load", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    p.add_argument("--dtype", default="fp16,fp32", help="comma-separated: fp16, fp32, bf16")
    p.add_argument("--device", choices=("cuda", "cpu"), default="")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--checkpoint", type=Path, help="load this single file instead of writing a random one")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="folder for the JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    imports_s = timed_imports()
    import torch

    from fewstep.bench.core.ldm_files import write_random_checkpoint

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(tempfile.mkdtemp(prefix="fewstep-load-"))
    try:
        path = args.checkpoint or write_random_checkpoint(work / f"{args.model}-random.safetensors", args.model)
        with path.open("rb") as f:                 # warm page cache
            while f.read(1 << 24):
                pass
        rows: dict[str, Any] = {}
        for dtype_name in filter(None, args.dtype.split(",")):
            times = load_times(path, dtype_name, device, args.repeat)
            rows[dtype_name] = {"load_s_median": round(statistics.median(times), 2),
                                "load_s": [round(t, 2) for t in times]}
        size_gb = round(path.stat().st_size / 1e9, 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device,
                       "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
                       "cores": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                       "model": args.model, "file_gb": size_gb, "imports_s": round(imports_s, 2)},
              "loads": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_load.json").write_text(json.dumps(result, indent=1))
    lines = [json.dumps(result["meta"]), "| dtype | load (s), median | each |", "|---|---:|---|"]
    lines += [f"| {k} | {v['load_s_median']} | {v['load_s']} |" for k, v in rows.items()]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
