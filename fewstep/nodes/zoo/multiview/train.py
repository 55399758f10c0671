"""Training recipe of the built-in multi-view teacher and its caption probe (one command, CPU-sized; the
GPU run is ``bench/prd/gpu_run.sh``):

    python -m fewstep.nodes.zoo.multiview.train --seconds 270   # data + caption probe + teacher, ~6 min

It renders the data (``data.make_dataset``), trains the probe and the teacher, and writes
``fewstep-tiny-mv-teacher.*``, ``fewstep-tiny-mv-probe.*``, a report and a sample grid into ``--out``
(default: the zoo's ``weights/``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fewstep.nodes.zoo.multiview.builtin import (
    PROBE_FILE,
    TEACHER_FILE,
    CaptionEmbedder,
    save_weights,
    weights_dir,
)
from fewstep.nodes.zoo.multiview.data import (
    COLOURS,
    SHAPES,
    ViewDataset,
    ViewSpec,
    all_primitives,
    camera_features,
    make_dataset,
)
from fewstep.nodes.zoo.multiview.evaluate import targets, teacher_probe_accuracy, train_probe
from fewstep.nodes.zoo.multiview.models import MVUNet, TeacherConfig, make_teacher

REPORT_FILE = "fewstep-tiny-mv-teacher-report.json"
SAMPLES_FILE = "fewstep-tiny-mv-teacher-samples.png"


@dataclass(frozen=True)
class TeacherRecipe:
    """Args: rendered views per object; batch; AdamW lr; CFG drop rate; min-SNR γ; EMA decay; time cap;
    step cap; probe steps; seed."""

    views_per_object: int = 64
    batch: int = 32
    lr: float = 2e-3
    drop_text: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.995
    seconds: float = 300.0
    max_steps: int = 100_000
    probe_steps: int = 400
    seed: int = 0


def train_teacher(data: ViewDataset, text: torch.Tensor, recipe: TeacherRecipe,
                  config: TeacherConfig | None = None, device: str = "cpu") -> tuple[MVUNet, dict]:
    """ε-prediction DDPM training with min-SNR-γ weights (Hang et al. 2023) and text dropout for CFG;
    returns the EMA network and stats. ``text`` [24, D] embeds each object's caption."""
    torch.manual_seed(recipe.seed)
    net = MVUNet(config or TeacherConfig()).to(device)
    ema = copy.deepcopy(net).requires_grad_(False)
    ab = make_teacher(copy.deepcopy(net)).alphas.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(recipe.seed)
    cams, images, text, labels = (camera_features(data.views).to(device), data.images.to(device), text.to(device),
                                  data.labels.to(device))
    start, step, losses = time.monotonic(), 0, []
    while step < recipe.max_steps and time.monotonic() - start < recipe.seconds:
        idx = torch.randint(0, len(data.images), (recipe.batch,), generator=gen)
        idx = idx.to(device)
        x0, t = images[idx], torch.randint(0, len(ab), (recipe.batch,), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        a = ab[t].view(-1, 1, 1, 1)
        keep = (torch.rand(recipe.batch, 1, generator=gen) >= recipe.drop_text).float().to(device)
        eps = net(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, text[labels[idx]] * keep, cams[idx])
        snr = a.flatten() / (1 - a.flatten())
        weight = snr.clamp(max=recipe.min_snr_gamma) / snr                     # min-SNR-γ for ε-prediction
        loss = (weight * (eps - noise).pow(2).mean((1, 2, 3))).mean()
        for group in opt.param_groups:
            group["lr"] = recipe.lr * min(1.0, (step + 1) / 100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(recipe.ema_decay, (1 + step) / (10 + step))     # EMA warm-up: short runs stay fresh
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        losses.append(float(loss.detach()))
        step += 1
    seconds = time.monotonic() - start
    return ema.eval().cpu(), {"steps": step, "seconds": round(seconds, 1), "final_loss": round(sum(losses[-50:]) / 50, 4)}


def stage_teacher(out: Path, recipe: TeacherRecipe, device: str = "cpu") -> dict:
    """Render the data, train the probe and the teacher, write weights + report + a sample grid."""
    t0 = time.monotonic()
    data = make_dataset(recipe.views_per_object, recipe.seed)
    held = make_dataset(4, recipe.seed + 1)
    render_s = time.monotonic() - t0
    prims = all_primitives()
    text = CaptionEmbedder()([p.caption() for p in prims])
    c, s = targets(prims, data.labels)
    probe = train_probe(data.images, c, s, recipe.probe_steps, recipe.seed)
    hc, hs = targets(prims, held.labels)
    pc, ps = probe(held.images)
    probe_acc = float(((pc.argmax(-1) == hc) & (ps.argmax(-1) == hs)).float().mean())
    save_weights(probe, out / PROBE_FILE, {"colours": list(COLOURS), "shapes": list(SHAPES)})
    net, stats = train_teacher(data, text, recipe, device=device)
    config = {"unet": net.config.to_dict(), "text_encoder": "all-MiniLM-L6-v2 (pooled)", "image_size": ViewSpec().size,
              "prediction_type": "epsilon", "camera": "(sin az, cos az, sin el, cos el)", "uncond": "zeros"}
    save_weights(net, out / TEACHER_FILE, config, half=True)
    acc, images = teacher_probe_accuracy(net, probe, text)
    report = {"recipe": asdict(recipe), "render_seconds": round(render_s, 1), "train": stats,
              "params": sum(p.numel() for p in net.parameters()), "probe_heldout_accuracy": round(probe_acc, 4),
              "teacher_samples_probe": acc, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1))
    _save_grid(images, out / SAMPLES_FILE, cols=8)
    return report


def _save_grid(images: torch.Tensor, path: Path, cols: int) -> None:
    from PIL import Image

    n = images.shape[0] - images.shape[0] % cols
    x = ((images[:n].clamp(-1, 1) + 1) / 2 * 255).byte()                          # [N, 3, S, S]
    s = x.shape[-1]
    grid = x.reshape(n // cols, cols, 3, s, s).permute(0, 3, 1, 4, 2).reshape(n // cols * s, cols * s, 3)
    Image.fromarray(grid.numpy()).save(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=weights_dir())
    parser.add_argument("--seconds", type=float, default=300.0, help="teacher training time cap")
    parser.add_argument("--steps", type=int, default=None, help="teacher step cap (default: none, the time cap decides)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = stage_teacher(args.out, TeacherRecipe(seconds=args.seconds, max_steps=args.steps or 100_000), args.device)
    print(json.dumps(report, indent=1))  # noqa: T201


if __name__ == "__main__":
    main()
