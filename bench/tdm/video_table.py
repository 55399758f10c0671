"""TDM on the built-in video model: the teacher against its TDM students on held-out captions (one command).

    fewstep bench tdm-video [--clips 39] [--students fewstep/nodes/tdm/weights] [--out FILE.json]

Rows: real renders (a second draw of start positions: each metric's floor), the teacher (Euler, shift 3, CFG 4)
at 50, 4 and 2 steps, and each shipped TDM student at its own K (4, 2: Euler on its own σ's = DDIM on its own
ε̂, no CFG). One 8-frame clip per held-out caption, the same noise seeds in every row. Columns
(``nodes.zoo.video.evaluate``): per-frame attribute accuracy (zoo probe, frames centred on the tracked object),
motion accuracy (analytic tracker), FD-Clip3D (temporal Fréchet distance of the 3D-conv feature net) against
real renders of the same captions and against the 50-step teacher's clips, seconds per clip (batches of 16, and
batch 1, sampling + VAE decode, text encoding excluded; and batch-1 sampling alone, without the per-frame VAE
decode; best of 5) and DiT evaluations per clip (steps, twice with CFG). Writes JSON and a markdown table beside it, prints
the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "video-table.json"
COLUMNS = (("frame_attribute_accuracy", "frame attribute acc. ↑", "{:.3f}"), ("motion_accuracy", "motion acc. ↑", "{:.3f}"),
           ("fd_clip3d", "FD-Clip3D vs real ↓", "{:.2f}"), ("fd_clip3d_teacher", "FD-Clip3D vs teacher 50 ↓", "{:.2f}"),
           ("dit_rows", "DiT evaluations / clip", "{:d}"), ("seconds_per_clip", "s / clip (batch 16)", "{:.3f}"),
           ("latency_s", "s / clip (batch 1)", "{:.3f}"), ("sampling_latency_s", "s sampling only (batch 1)", "{:.3f}"))
TEACHER_STEPS = (50, 4, 2)


def _clips(model: Any, specs: list[Any], sigmas: torch.Tensor, cfg: float, seed: int, batch: int = 16
           ) -> tuple[torch.Tensor, float]:
    """(frames [N, T, 64, 64, 3], seconds per clip): batches seeded ``seed + first index`` as
    ``evaluate.generate_clips``, on the given schedule."""
    from fewstep.nodes.zoo.video.model import generate

    t0, parts = time.time(), []
    for i in range(0, len(specs), batch):
        chunk = specs[i:i + batch]
        frames, _ = generate(model, [s.caption() for s in chunk], frames=chunk[0].frames, sigmas=sigmas, cfg=cfg,
                             seed=seed + i, sampler="flow_euler")
        parts.append(frames)
    return torch.cat(parts), (time.time() - t0) / max(len(specs), 1)


def _latency(model: Any, sigmas: torch.Tensor, cfg: float, repeats: int = 5) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of one clip at batch 1: (sampling + VAE decode, sampling alone). The best of
    several is the figure least disturbed by other jobs on a shared machine."""
    from fewstep.nodes.core.video_sampling import sample_flow_euler
    from fewstep.nodes.zoo.video.model import generate

    prompt = ["a small red circle moving right"]
    cond = model.cond(prompt, cfg=cfg)
    c = model.dit.config
    x = torch.randn(1, 8, c.latent_channels, c.latent_size, c.latent_size).to(model.device)
    generate(model, prompt, sigmas=sigmas, cfg=cfg)                                   # warm-up
    full, sampling = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        generate(model, prompt, sigmas=sigmas, cfg=cfg, seed=r)
        full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            sample_flow_euler(model.denoiser(), x, sigmas, cond=cond)
        sampling.append(time.perf_counter() - t0)
    return min(full), min(sampling)


def cells(teacher: Any, students: dict[str, Any], teacher_steps: tuple[int, ...], shift: float, cfg: float
          ) -> list[tuple[str, Any, torch.Tensor, float, int]]:
    """(row label, model, sigmas, CFG, steps) of every generated row: the teacher first, then each student."""
    from fewstep.nodes.core.video_sampling import shifted_sigmas
    from fewstep.nodes.tdm.flow import student_sigma_schedule
    from fewstep.nodes.tdm.video import student_schedule

    rows = [(f"teacher Euler, CFG {cfg:g}", teacher, shifted_sigmas(n, shift), cfg, n) for n in teacher_steps]
    for name, model in students.items():
        k, s, top = student_schedule(model)
        rows.append((f"TDM student ({name})", model, student_sigma_schedule(k, s, top), 1.0, k))
    return rows


def measure(clip_count: int, students_dir: Path, device: str, shift: float, cfg: float, seed: int,
            teacher_steps: tuple[int, ...] = TEACHER_STEPS, text_cache: Path | None = None) -> dict[str, Any]:
    """Every row's metrics; the table's JSON."""
    from fewstep.bench.tdm.video_students import load_teacher
    from fewstep.nodes.core.threads import tiny_cpu_work
    from fewstep.nodes.zoo.builtin import load_probe
    from fewstep.nodes.zoo.video import clips
    from fewstep.nodes.zoo.video import evaluate as ev
    from fewstep.nodes.zoo.video.features import load_features, temporal_fd

    teacher = load_teacher(device, text_cache)
    students = load_students(students_dir, teacher)
    probe, featnet = load_probe(device), load_features(device)
    specs = ev.heldout_specs(clip_count, clips.FRAMES, seed)
    reference = ev.render_specs(specs)
    rows: dict[str, dict[str, Any]] = {
        "real renders": ev.evaluate_reference(specs, reference, probe=probe, featnet=featnet)}
    teacher50 = None
    for label, model, sigmas, scale, steps in cells(teacher, students, teacher_steps, shift, cfg):
        logging.info("tdm-video: %s, %d steps", label, steps)
        with tiny_cpu_work(device, 0):
            frames, seconds = _clips(model, specs, sigmas.to(device), scale, seed)
            latency, sampling = _latency(model, sigmas.to(device), scale)
        if teacher50 is None:
            teacher50 = frames                                    # the first row: the 50-step teacher
        out = ev.evaluate_clips(frames, specs, probe=probe, featnet=featnet, reference=reference)
        out |= {"fd_clip3d_teacher": temporal_fd(featnet, frames, teacher50), "steps": steps, "cfg": scale,
                "dit_rows": steps * (1 if scale == 1.0 else 2),          # CFG runs the DiT on two rows a step
                "sigmas": [round(float(s), 4) for s in sigmas], "seconds_per_clip": seconds, "latency_s": latency,
                "sampling_latency_s": sampling}
        if label.startswith("TDM"):
            out["student_file"] = model.name
            out["train_steps"] = model.info["tdm"].get("train_steps")
        rows[f"{label}, {steps} steps"] = out
    return {"rows": rows, "clips": len(specs), "frames": clips.FRAMES, "shift": shift, "cfg": cfg, "seed": seed,
            "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (one torch thread)",
            "teacher": teacher.name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _weights() -> Path:
    from fewstep.nodes.tdm.video_graph import weights_dir

    return weights_dir()


def load_students(folder: Path, teacher: Any) -> dict[str, Any]:
    """Every ``fewstep-tdm-video-*.safetensors`` student in ``folder`` around the teacher, largest K first."""
    from fewstep.nodes.tdm.video import load_video_student, student_video_model

    out = {}
    for path in sorted(folder.glob("fewstep-tdm-video-*.safetensors")):
        dit, meta = load_video_student(path, teacher.device)
        out[f"K = {meta['student_steps']}"] = student_video_model(teacher, dit, meta, path.name)
    return dict(sorted(out.items(), key=lambda kv: -int(kv[0].split()[-1])))


def markdown(table: dict[str, Any]) -> str:
    head = "| row | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in table["rows"].items():
        cells_ = [fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells_) + " |")
    lines.append("")
    lines.append(f"{table['clips']} held-out clips of {table['frames']} frames, seed {table['seed']}; teacher "
                 f"{table['teacher']} (shift {table['shift']:g}); {table['device']}, {table['date']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fewstep bench tdm-video", description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=39, help="held-out clips, captions cycled (default 39: one each)")
    p.add_argument("--students", type=Path, default=None, help="folder of the students (default: the pack's weights/)")
    p.add_argument("--teacher-steps", type=int, nargs="+", default=list(TEACHER_STEPS),
                   help="teacher Euler step counts; the first is the reference of the 'vs teacher' column")
    p.add_argument("--shift", type=float, default=3.0)
    p.add_argument("--cfg", type=float, default=4.0, help="the teacher's CFG (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--text-cache", type=Path, default=None, help="MiniLM token states file instead of MiniLM")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (markdown beside it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    table = measure(args.clips, args.students or _weights(), args.device, args.shift, args.cfg, args.seed,
                    tuple(args.teacher_steps), args.text_cache)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1, default=str))
    text = markdown(table)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
