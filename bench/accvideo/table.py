"""AccVideo's ablation in miniature on the built-in video model (one command, in stages of a few minutes).

    fewstep bench accvideo --work DIR                     # everything: SynVid, the four arms, the table
    fewstep bench accvideo --work DIR --stage synvid      # 1. the teacher's trajectories (resumable)
    fewstep bench accvideo --work DIR --stage train --arm per_timestep   # 2. one student arm (resumable)
    fewstep bench accvideo --work DIR --stage eval        # 3. the table (teacher rows measured in this run)

Rows: the teacher (built-in video model) with 50 flow-Euler steps at shift 7 and CFG 4 (the SynVid teacher), the
same teacher with 5 Euler steps at AccVideo's key points (1, .9655, .9130, .8235, .6364, 0), and students of
identical budget (iterations, batch, lr, seed), each sampled with those 5 steps and no CFG (distilled in):

- ``traj``: L_traj only;  ``shared``: + GAN with one shared head;  ``per_timestep``: + GAN with one head per key
  timestep (the paper's);  ``useless``: L_traj on forward-diffused real clips at the same key timesteps (the
  "useless data points" control; no trajectories);  ``per_timestep_d100``: the paper's arm with the heads'
  lr at 100x the student's instead of 10x (a stronger discriminator).

Columns (``nodes.zoo.video.evaluate``): FD-Clip3D (temporal Fréchet distance of the zoo's 3D-conv clip features)
against real renders of the held-out captions and against the teacher's 50-step clips from the same noise;
frame attribute and motion accuracy; seconds per clip, batches of 16, of the sampling loop alone and of the
whole generation (text encoding, sampling, VAE decode) on this machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("fewstep.accvideo.bench")

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "accvideo.json"
ARMS: dict[str, dict[str, Any]] = {
    "traj": {"adversarial": "off", "data_points": "trajectory"},
    "shared": {"adversarial": "shared", "data_points": "trajectory"},
    "per_timestep": {"adversarial": "per_timestep", "data_points": "trajectory"},
    "useless": {"adversarial": "off", "data_points": "forward_diffused"},
    # a 10x faster-learning discriminator (heads at 100x the student's lr): does a stronger D help?
    "per_timestep_d100": {"adversarial": "per_timestep", "data_points": "trajectory", "head_lr_ratio": 100.0},
}
ROW_NAMES = {"teacher50": "teacher, 50 Euler steps (shift 7, CFG 4)", "teacher5": "teacher, 5 key-point steps (CFG 4)",
             "traj": "student: L_traj only", "shared": "student: L_traj + GAN, one shared head",
             "per_timestep": "student: L_traj + GAN, per-timestep heads",
             "useless": "control: L_traj on forward-diffused real clips",
             "per_timestep_d100": "student: L_traj + GAN, per-timestep heads at 100x lr"}
COLUMNS = (("fd_clip3d", "FD-Clip3D vs real", "{:.2f}"), ("fd_vs_teacher50", "FD-Clip3D vs teacher-50", "{:.2f}"),
           ("frame_attribute_accuracy", "frame attr. acc.", "{:.3f}"), ("motion_accuracy", "motion acc.", "{:.3f}"),
           ("sampling_seconds_per_clip", "sampling s / clip", "{:.3f}"),
           ("seconds_per_clip", "s / clip incl. decode", "{:.3f}"), ("train_seconds", "train s", "{:.0f}"))


DEVICE = "cpu"


def _teacher() -> Any:
    from fewstep.nodes.zoo.video.model import load_video_model

    return load_video_model(device=DEVICE)


def stage_synvid(work: Path, count: int, seed: int) -> Path:
    from fewstep.nodes.accvideo.graph import make_synvid
    from fewstep.nodes.zoo.video import clips

    model = _teacher()
    t0 = time.time()
    store = make_synvid(model, clips.split_captions("train"), count=count, cfg=4.0, frames=clips.FRAMES, seed=seed,
                        name="synvid", folder=work / "synvid", progress=lambda j, n: log.info("SynVid shard %d/%d", j, n))
    log.info("SynVid: %d trajectories in %.0f s", count, time.time() - t0)
    return store.folder


def stage_train(work: Path, arm: str, iterations: int, batch: int, lr: float, seed: int,
                max_seconds: float | None) -> dict[str, Any]:
    from fewstep.nodes.accvideo.graph import distill, save_student
    from fewstep.nodes.accvideo.synvid import SynVidStore
    from fewstep.nodes.accvideo.train import AccVideoConfig

    model = _teacher()
    cfg = AccVideoConfig(steps=iterations, batch_size=batch, lr=lr, seed=seed, **ARMS[arm])
    parts: list[dict[str, float]] = []
    t0 = time.time()
    student, losses = distill(model, SynVidStore(work / "synvid"), cfg, run_name=arm, checkpoint_every=10,
                              max_seconds=max_seconds, log_to=parts, folder=work / "runs" / arm)
    seconds = time.time() - t0
    per = cfg.updates_per_iteration(5)
    record = {"arm": arm, "config": ARMS[arm] | {"iterations": iterations, "batch": batch, "lr": lr, "seed": seed},
              "updates": len(losses), "iterations_done": len(losses) / per, "train_seconds_this_call": seconds,
              "final_traj_loss": _mean_last([p["traj"] for p in parts if "traj" in p]),
              "final_head_loss": _mean_last([p["head"] for p in parts if "head" in p]),
              "final_gen_loss": _mean_last([p["gen"] for p in parts if "gen" in p])}
    prev = work / "students" / f"{arm}.record.json"
    old = json.loads(prev.read_text()) if prev.is_file() else {}
    record["train_seconds"] = old.get("train_seconds", 0.0) + seconds     # a resumed call adds to earlier ones
    for key in ("final_traj_loss", "final_head_loss", "final_gen_loss"):
        if record[key] is None and old.get(key) is not None:            # nothing left to train in this call
            record[key] = old[key]
    save_student(student, work / "students" / f"{arm}.safetensors", {"record": record})
    prev.write_text(json.dumps(record, indent=1))
    log.info("arm %s: %d updates in %.0f s", arm, len(losses), seconds)
    return record


def _mean_last(values: list[float], n: int = 20) -> float | None:
    return sum(values[-n:]) / len(values[-n:]) if values else None


@torch.no_grad()
def _generate(model: Any, specs: list[Any], *, cfg: float, sigmas: torch.Tensor, seed: int,
              batch: int = 16) -> tuple[torch.Tensor, float, float]:
    """Clips for ``specs`` (noise as ``zoo.video.model.generate`` draws it): (frames, seconds per clip of the
    whole generation incl. VAE decode, seconds per clip of the sampling loop alone)."""
    from fewstep.nodes.core.threads import tiny_cpu_work
    from fewstep.nodes.core.video_sampling import sample_flow_euler

    dcfg, dev = model.dit.config, model.device
    parts, total, sampling = [], 0.0, 0.0
    for i in range(0, len(specs), batch):
        chunk = specs[i:i + batch]
        t0 = time.perf_counter()
        cond = model.cond([s.caption() for s in chunk], None, cfg)
        gen = torch.Generator().manual_seed(seed + i)
        x = torch.randn((len(chunk), chunk[0].frames, dcfg.latent_channels, dcfg.latent_size, dcfg.latent_size),
                        generator=gen).to(dev)
        with tiny_cpu_work(dev, 0):
            t1 = time.perf_counter()
            lat = sample_flow_euler(model.denoiser(), x, sigmas.to(dev), cond=cond)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            parts.append(model.decode(lat))
        total += time.perf_counter() - t0
        sampling += t2 - t1
    return torch.cat(parts), total / len(specs), sampling / len(specs)


def stage_eval(work: Path, clip_count: int, seed: int) -> dict[str, Any]:
    from fewstep.nodes.accvideo.graph import load_student
    from fewstep.nodes.accvideo.keypoints import key_timesteps
    from fewstep.nodes.core.video_sampling import shifted_sigmas
    from fewstep.nodes.zoo.builtin import load_probe
    from fewstep.nodes.zoo.video import clips
    from fewstep.nodes.zoo.video import evaluate as ev
    from fewstep.nodes.zoo.video.features import load_features, temporal_fd

    teacher, probe, featnet = _teacher(), load_probe(DEVICE), load_features(DEVICE)
    specs = ev.heldout_specs(clip_count, clips.FRAMES, seed)
    reference = ev.render_specs(specs)
    rows: dict[str, dict[str, Any]] = {"real renders": ev.evaluate_reference(specs, reference, probe=probe, featnet=featnet)}
    models: dict[str, tuple[Any, float, torch.Tensor]] = {
        "teacher50": (teacher, 4.0, shifted_sigmas(50, 7.0)), "teacher5": (teacher, 4.0, key_timesteps())}
    for arm in ARMS:
        path = work / "students" / f"{arm}.safetensors"
        if path.is_file():
            models[arm] = (load_student(path.name, DEVICE, root=path.parent), 1.0, key_timesteps())
    teacher50 = None
    for key, (model, cfg, sigmas) in models.items():
        log.info("eval: %s", key)
        frames, seconds, sampling = _generate(model, specs, cfg=cfg, sigmas=sigmas, seed=seed)
        teacher50 = frames if key == "teacher50" else teacher50
        row = ev.evaluate_clips(frames, specs, probe=probe, featnet=featnet, reference=reference)
        row |= {"fd_vs_teacher50": temporal_fd(featnet, frames, teacher50), "seconds_per_clip": seconds,
                "sampling_seconds_per_clip": sampling,
                "steps": len(sigmas) - 1, "cfg": cfg}
        record = work / "students" / f"{key}.record.json"
        if record.is_file():
            row |= {k: v for k, v in json.loads(record.read_text()).items() if k != "arm"}
        rows[ROW_NAMES[key]] = row
    return {"rows": rows, "clips": len(specs), "frames": clips.FRAMES, "seed": seed, "device": _device_name(),
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "synvid": json.loads((work / "synvid" / "manifest.json").read_text())}


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else "cpu (2-core VM, one torch thread)"


def markdown(table: dict[str, Any]) -> str:
    lines = ["| row | " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in table["rows"].items():
        cells = [fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    syn = table["synvid"]
    lines += ["", f"{table['clips']} held-out clips of {table['frames']} frames (seed {table['seed']}), SynVid of "
              f"{syn['count']} teacher trajectories; {table['device']}, {table['date']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fewstep bench accvideo", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("accvideo-bench"), help="SynVid, runs and students go here")
    p.add_argument("--stage", choices=["all", "synvid", "train", "eval"], default="all")
    p.add_argument("--arm", choices=sorted(ARMS), nargs="+", default=list(ARMS), help="arms of --stage train/all")
    p.add_argument("--count", type=int, default=1536, help="SynVid trajectories (default 1536)")
    p.add_argument("--iterations", type=int, default=100, help="paper iterations per arm (default 100)")
    p.add_argument("--batch", type=int, default=16, help="clips per update (default 16)")
    p.add_argument("--lr", type=float, default=1e-4, help="student AdamW lr (default 1e-4)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop a training call after this long (resumable)")
    p.add_argument("--clips", type=int, default=78, help="held-out clips, captions cycled (default 78: 2 each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device (default cpu; the GPU recipe passes cuda)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (markdown beside it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    global DEVICE
    DEVICE = args.device
    torch.set_num_threads(1)        # one thread: the 2-core machine's measured policy (nodes.core.threads)
    if args.stage in ("all", "synvid"):
        stage_synvid(args.work, args.count, args.seed)
    if args.stage in ("all", "train"):
        for arm in args.arm:
            stage_train(args.work, arm, args.iterations, args.batch, args.lr, args.seed, args.max_seconds)
    if args.stage in ("all", "eval"):
        table = stage_eval(args.work, args.clips, args.seed)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(table, indent=1, default=str))
        text = markdown(table)
        args.out.with_suffix(".md").write_text(text + "\n")
        print(text)  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
