"""``fewstep bench e2e``: the path a user takes, from a single-file checkpoint to saved PNGs, against
diffusers' pipeline and ComfyUI's sampling path, each system in its own fresh process, in one run.

The run writes a random-weight single-file checkpoint of the real SD1.5 (``--model sd15``) or SDXL
(``--model sdxl``) architecture, LDM layout, in the file dtype (fp16) into a temporary models folder
(:mod:`bench.core.ldm_files`; speed does not depend on weight values), then starts one process per system:

- ``fewstep``: the API graph ``CheckpointLoaderSimple -> CLIPTextEncode -> KSampler(lcm, sgm_uniform,
  cfg 1) -> VAEDecode -> SaveImage`` through the real executor (``app.executor.Executor`` with the installed
  packs) after the packs' background imports started (as the server's queue worker starts them), files
  written as the server writes them; the queue figure runs 16 jobs through the server's queue worker
  (``app.worker.QueueWorker`` over the SQLite store), so PNG encoding overlaps the next job. Its checkpoint
  load is the loader node's time in the first job (any import it still waited for included); the
  baselines' is their load call after their imports.
- ``diffusers``: ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline.from_single_file`` (configs from
  a local folder written by this run: offline) + ``LCMScheduler``, the same steps, the PNG through PIL at
  compress level 4 with text chunks of the same size as ours.
- ``comfyui`` (with ``--comfyui DIR``, ComfyUI's source folder; not vendored): ``comfy.sd``'s checkpoint
  loader, its CLIP encoder, ``comfy.sample.sample`` (what its KSampler node calls), its VAE decode and a PIL
  PNG at level 4 with the same text chunks, as its SaveImage does.

Per system: process start -> first image on disk (wall clock, the parent's ``time.time()`` before the
spawn), checkpoint load, per-job median and spread over ``--jobs`` jobs after the first (new seed each
job, the checkpoint and prompt cached as each system caches them), and jobs/s for a queue of ``--queue``
jobs. A job that fails ends the run with its error and no table (exit 1).

Usage: ``fewstep bench e2e [--model sd15|sdxl] [--size 512] [--steps 4] [--batch 1] [--jobs 20]
[--queue 16] [--device cuda|cpu] [--systems fewstep,diffusers,comfyui] [--comfyui DIR] [--out DIR]
[--checkpoint FILE]``. On a CPU: ``OMP_NUM_THREADS=1 fewstep bench e2e --device cpu --size 128 --jobs 3
--queue 4`` (a few minutes, most of it writing the 2 GB file). Writes ``bench_e2e.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SYSTEMS = ("fewstep", "diffusers", "comfyui")
PROMPT_TEXT = "a red fox in the snow, detailed, soft light"
SEED0 = 1000


@dataclass
class Spec:
    """What every system's process runs (passed as JSON on its command line)."""

    model: str                 # sd15 | sdxl
    checkpoint: str            # the single file
    size: int                  # image side in pixels
    steps: int
    batch: int
    jobs: int                  # timed jobs after the first
    queue: int                 # jobs in the throughput queue
    device: str                # cuda | cpu
    out: str                   # this system's output folder
    started: float = 0.0       # the parent's time.time() just before the spawn
    comfyui: str = ""


class JobFailed(RuntimeError):
    """A benchmarked job failed: no figures."""


# ---------------------------------------------------------------------------------------------------
# the graph and its metadata
# ---------------------------------------------------------------------------------------------------

def api_graph(spec: Spec, seed: int) -> dict[str, Any]:
    """ComfyUI's default text-to-image graph at few-step settings (API format)."""
    name = Path(spec.checkpoint).name
    node = lambda cls, **inputs: {"class_type": cls, "inputs": inputs}  # noqa: E731
    return {
        "1": node("CheckpointLoaderSimple", ckpt_name=name),
        "2": node("CLIPTextEncode", text=PROMPT_TEXT, clip=["1", 1]),
        "3": node("CLIPTextEncode", text="", clip=["1", 1]),
        "4": node("EmptyLatentImage", width=spec.size, height=spec.size, batch_size=spec.batch),
        "5": node("KSampler", model=["1", 0], positive=["2", 0], negative=["3", 0], latent_image=["4", 0],
                  seed=seed, steps=spec.steps, cfg=1.0, sampler_name="lcm", scheduler="sgm_uniform", denoise=1.0),
        "6": node("VAEDecode", samples=["5", 0], vae=["1", 2]),
        "7": node("SaveImage", images=["6", 0], filename_prefix="e2e"),
    }


def workflow_stand_in(spec: Spec) -> dict[str, Any]:
    """What the editor adds as ``extra_pnginfo.workflow`` (its UI graph): a stand-in of a typical size
    (the default graph's UI workflow is ~8 kB), the same for every system, so each PNG carries equal text."""
    return {"nodes": [{"id": i, "type": "Node", "widgets_values": ["x" * 900]} for i in range(8)], "links": []}


def png_text(spec: Spec, seed: int) -> dict[str, str]:
    return {"prompt": json.dumps(api_graph(spec, seed)), "workflow": json.dumps(workflow_stand_in(spec))}


def save_pil_png(images: Any, folder: Path, stem: str, text: dict[str, str]) -> None:
    """PNG files through PIL at compress level 4 (what diffusers users and ComfyUI's SaveImage write)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    for i, image in enumerate(images):
        image.save(folder / f"{stem}_{i:02}.png", pnginfo=info, compress_level=4)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------------
# the systems (each runs in its own process)
# ---------------------------------------------------------------------------------------------------

def _timed_jobs(job: Any, spec: Spec) -> dict[str, Any]:
    """:func:`_first_and_timed`, then ``queue`` jobs one after another (a user's loop over a queue)."""
    timed = _first_and_timed(job, spec)
    t0 = time.perf_counter()
    for i in range(spec.queue):
        job(SEED0 + 100 + i)
    return {**timed, "queue_jobs_per_s": round(spec.queue / (time.perf_counter() - t0), 3)}


def _stats(times_ms: list[float]) -> dict[str, Any]:
    if not times_ms:
        return {}
    return {"job_ms_median": round(statistics.median(times_ms), 2), "job_ms_min": round(min(times_ms), 2),
            "job_ms_max": round(max(times_ms), 2)}


def run_diffusers(spec: Spec) -> dict[str, Any]:
    import torch
    from diffusers import LCMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from fewstep.bench.core.diffusers_config import write_pipeline_config

    dtype = torch.float16 if spec.device == "cuda" else torch.float32
    config = write_pipeline_config(Path(spec.out) / "config", spec.model)
    t0 = time.perf_counter()
    cls = StableDiffusionPipeline if spec.model == "sd15" else StableDiffusionXLPipeline
    extra = {"safety_checker": None, "requires_safety_checker": False} if spec.model == "sd15" else {}
    pipe = cls.from_single_file(spec.checkpoint, config=str(config), local_files_only=True, torch_dtype=dtype,
                                **extra).to(spec.device)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    sync(spec.device)
    load_s = time.perf_counter() - t0
    folder = Path(spec.out) / "images"
    folder.mkdir(parents=True, exist_ok=True)

    def job(seed: int) -> None:
        generator = torch.Generator(spec.device).manual_seed(seed)
        images = pipe(PROMPT_TEXT, num_inference_steps=spec.steps, guidance_scale=1.0, height=spec.size,
                      width=spec.size, num_images_per_prompt=spec.batch, generator=generator).images
        save_pil_png(images, folder, f"d{seed}", png_text(spec, seed))

    return {"checkpoint_load_s": round(load_s, 2), **_timed_jobs(job, spec)}


def run_comfyui(spec: Spec) -> dict[str, Any]:
    """ComfyUI's own functions, as its CheckpointLoaderSimple / CLIPTextEncode / KSampler / VAEDecode /
    SaveImage nodes call them (``comfy.sd.load_checkpoint_guess_config``, ``comfy.sample.sample``)."""
    sys.path.insert(0, spec.comfyui)
    import comfy.cli_args

    if spec.device == "cpu":
        comfy.cli_args.args.cpu = True
    import comfy.sample
    import comfy.sd
    import numpy as np
    import torch
    from PIL import Image

    t0 = time.perf_counter()
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(spec.checkpoint, output_vae=True, output_clip=True)[:3]
    load_s = time.perf_counter() - t0

    def encode(text: str) -> list[list[Any]]:
        cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
        return [[cond, {"pooled_output": pooled}]]

    folder = Path(spec.out) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    latent = torch.zeros(spec.batch, 4, spec.size // 8, spec.size // 8)
    conds: dict[str, Any] = {}

    @torch.inference_mode()                       # ComfyUI's executor runs every node under inference mode
    def job(seed: int) -> None:
        if not conds:                             # its executor caches the text encodings between jobs
            conds.update(positive=encode(PROMPT_TEXT), negative=encode(""))
        noise = comfy.sample.prepare_noise(latent, seed)
        samples = comfy.sample.sample(model, noise, spec.steps, 1.0, "lcm", "sgm_uniform", conds["positive"],
                                      conds["negative"], latent, denoise=1.0, disable_pbar=True, seed=seed)
        images = vae.decode(samples)
        pil = [Image.fromarray(np.clip(255.0 * i.cpu().numpy(), 0, 255).astype(np.uint8)) for i in images]
        save_pil_png(pil, folder, f"c{seed}", png_text(spec, seed))

    return {"checkpoint_load_s": round(load_s, 2), **_timed_jobs(job, spec)}


def run_fewstep(spec: Spec) -> dict[str, Any]:
    from fewstep.app.api import Paths
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry, start_warm_up

    root = Path(spec.out)
    paths = Paths(model_roots=(Path(spec.checkpoint).parent.parent,), output_dir=root / "output",
                  temp_dir=root / "temp", input_dir=root / "input")
    registry = load_registry()
    warm_up = start_warm_up(registry)   # as the server's queue worker does when it starts, and like it
    executor = Executor(registry, CacheSet(), paths)
    extra = {"extra_pnginfo": {"workflow": workflow_stand_in(spec)}}
    loads: list[float] = []

    def job(seed: int) -> None:
        if warm_up is not None:          # the first job waits for those imports (see start_warm_up)
            warm_up.join()
        result = executor.execute(api_graph(spec, seed), prompt_id=f"e2e-{seed}", extra_data=extra)
        if result.status != "success":
            raise JobFailed(f"job seed {seed}: {_error_line(result.error)}")
        loads.append(result.node_times.get("1", 0.0))

    timed = _first_and_timed(job, spec)
    timed.update(_queue_fewstep(executor, spec, extra))
    return {"checkpoint_load_s": round(loads[0], 2), **timed}


def _first_and_timed(job: Any, spec: Spec) -> dict[str, Any]:
    """The first job (process start -> first image on disk), then ``jobs`` timed jobs, a new seed each."""
    job(SEED0)
    first = time.time() - spec.started
    times = []
    for i in range(spec.jobs):
        t0 = time.perf_counter()
        job(SEED0 + 1 + i)
        times.append(1e3 * (time.perf_counter() - t0))
    return {"first_image_s": round(first, 2), **_stats(times)}


def _queue_fewstep(executor: Any, spec: Spec, extra: dict[str, Any]) -> dict[str, Any]:
    """``queue`` jobs enqueued at once, drained by the server's queue worker (files written in the
    background, each job recorded after its files): jobs/s from the wake-up to the last history entry."""
    from fewstep.app.storage import JobStore
    from fewstep.app.worker import QueueWorker

    store = JobStore(Path(spec.out) / "queue.db")
    ids = [f"q{i}" for i in range(spec.queue)]
    for i, prompt_id in enumerate(ids):
        store.enqueue(prompt_id, api_graph(spec, SEED0 + 100 + i), extra, None, "bench")
    last_done = threading.Event()

    def emit(event: str, data: dict[str, Any], client: str | None) -> None:
        # the last job's end message (sent after its history): no polling thread competing for the GIL
        if event == "executing" and data.get("node") is None and data.get("prompt_id") == ids[-1]:
            last_done.set()

    worker = QueueWorker(store, executor, emit, idle_poll_s=3600.0)
    t0 = time.perf_counter()
    worker.start()
    try:
        if not last_done.wait(3600):
            raise JobFailed("the queue did not finish within an hour")
        elapsed = time.perf_counter() - t0
    finally:
        worker.stop()
    failed = [i for i in ids if store.history_entry(i)["status"]["status_str"] != "success"]
    if failed:
        messages = store.history_entry(failed[0])["status"]["messages"]
        raise JobFailed(f"{len(failed)} queued jobs failed; {failed[0]}: {json.dumps(messages)[-800:]}")
    return {"queue_jobs_per_s": round(spec.queue / elapsed, 3)}


def _error_line(error: dict[str, Any] | None) -> str:
    error = error or {}
    return (f"node {error.get('node_id')} ({error.get('node_type')}): {error.get('exception_type', '')} "
            f"{error.get('exception_message') or error.get('message') or error}")[:2000]


RUNNERS = {"fewstep": run_fewstep, "diffusers": run_diffusers, "comfyui": run_comfyui}


# ---------------------------------------------------------------------------------------------------
# the parent
# ---------------------------------------------------------------------------------------------------

def run_system(system: str, spec: Spec) -> dict[str, Any]:
    """Spawn a fresh process for ``system``; its last stdout line is its JSON. Raises JobFailed."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if spec.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""          # our loaders pick CUDA when they see it
    spec.started = time.time()
    proc = subprocess.run([sys.executable, "-m", "fewstep.bench.core.e2e", "--worker", system,
                           "--spec", json.dumps(asdict(spec))], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise JobFailed(f"{system} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [("per job, median (ms)", "job_ms_median"), ("per job, min-max (ms)", "range"),
            ("queue of N (jobs/s)", "queue_jobs_per_s"), ("process start -> first image (s)", "first_image_s"),
            ("checkpoint load (s)", "checkpoint_load_s")]
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, key in rows:
        cells = []
        for name in names:
            r = results[name]
            cells.append(f"{r.get('job_ms_min')}-{r.get('job_ms_max')}" if key == "range" else str(r.get(key, "-")))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "fewstep" in results:
        for name in names:
            if name != "fewstep" and results[name].get("job_ms_median") and results["fewstep"].get("job_ms_median"):
                lines.append(f"\nfewstep vs {name}: per job {results[name]['job_ms_median'] / results['fewstep']['job_ms_median']:.2f}x, "
                             f"queue {results['fewstep']['queue_jobs_per_s'] / results[name]['queue_jobs_per_s']:.2f}x")
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fewstep bench e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    p.add_argument("--size", type=int, default=0, help="image side (default 512 for sd15, 1024 for sdxl)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--jobs", type=int, default=20, help="timed jobs after the first")
    p.add_argument("--queue", type=int, default=16, help="jobs in the throughput queue")
    p.add_argument("--device", choices=("cuda", "cpu"), default="")
    p.add_argument("--systems", default="fewstep,diffusers,comfyui")
    p.add_argument("--comfyui", default="", help="ComfyUI's source folder (its sampling path is skipped without)")
    p.add_argument("--checkpoint", type=Path, help="use this single file instead of writing a random one")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="folder for the JSON")
    p.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _systems(args: argparse.Namespace) -> list[str]:
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"--systems: unknown {unknown}; choose from {list(SYSTEMS)}")
    if "comfyui" in systems and not args.comfyui:
        sys.stdout.write("comfyui: skipped (give ComfyUI's source folder with --comfyui DIR)\n")
        systems.remove("comfyui")
    elif args.comfyui and not (Path(args.comfyui) / "comfy" / "sd.py").is_file():
        raise ValueError(f"--comfyui {args.comfyui}: not a ComfyUI source folder (no comfy/sd.py)")
    return systems


def _checkpoint(args: argparse.Namespace, work: Path) -> tuple[Path, float]:
    """The single file to load (written now unless given) inside a ComfyUI-layout models folder."""
    import torch

    from fewstep.bench.core.ldm_files import write_random_checkpoint

    target = work / "models" / "checkpoints" / f"{args.model}-random.safetensors"
    t0 = time.perf_counter()
    if args.checkpoint is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(args.checkpoint.resolve(), target)
    else:
        write_random_checkpoint(target, args.model, torch.float16)
    with target.open("rb") as f:              # warm page cache: every system reads the same cached file
        while f.read(1 << 24):
            pass
    return target, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    if args.worker:
        spec = Spec(**json.loads(args.spec))
        sys.stdout.write(json.dumps(RUNNERS[args.worker](spec)) + "\n")
        return 0
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    systems = _systems(args)
    work = Path(tempfile.mkdtemp(prefix="fewstep-e2e-"))
    try:
        ckpt, write_s = _checkpoint(args, work)
        size = args.size or (512 if args.model == "sd15" else 1024)
        results: dict[str, dict[str, Any]] = {}
        for system in systems:
            spec = Spec(args.model, str(ckpt), size, args.steps, args.batch, args.jobs, args.queue, device,
                        str(work / system), comfyui=args.comfyui)
            sys.stdout.write(f"{system}: running ...\n")
            sys.stdout.flush()
            results[system] = run_system(system, spec)
    except JobFailed as exc:
        sys.stderr.write(f"fewstep bench e2e: no figures, a job failed: {exc}\n")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device,
            "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "cpu": platform.machine(),
            "cores": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS"), "model": args.model,
            "size": size, "steps": args.steps, "batch": args.batch, "jobs": args.jobs, "queue": args.queue,
            "checkpoint_write_s": round(write_s, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_e2e.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    sys.stdout.write(json.dumps(meta) + "\n" + table(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
