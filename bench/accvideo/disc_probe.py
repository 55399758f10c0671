"""Can a head on the frozen teacher's features tell SynVid key points from a student's? (a diagnostic)

    python -m fewstep.bench.accvideo.disc_probe --work DIR --arm per_timestep

For each key timestep t'_k (k = 4 ... 0): real = SynVid points at t'_k; generated = the student's own 5-step
rollout (from fresh noise, the captions of the real points) stopped at t'_k. A fresh ``FeatureHead`` (the
trainer's) is fitted on 3/4 of the pairs' teacher features (``TeacherFeatures``, as in training) with the
head's training lr for ``--updates`` full-batch AdamW steps, and its accuracy measured on the last 1/4. Accuracy
near 0.5 means these features do not separate the two sets, so the adversarial term has little to push on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def main(argv: list[str] | None = None) -> int:
    from fewstep.nodes.accvideo.graph import load_student
    from fewstep.nodes.accvideo.keypoints import key_timesteps
    from fewstep.nodes.accvideo.loss import FeatureHead, TeacherFeatures, euler_step
    from fewstep.nodes.accvideo.synvid import SynVidStore
    from fewstep.nodes.zoo.video.model import load_video_model

    p = argparse.ArgumentParser(prog="python -m fewstep.bench.accvideo.disc_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--arm", default="per_timestep")
    p.add_argument("--n", type=int, default=256, help="real and generated clips per key (default 256)")
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher = load_video_model()
    student = load_student(f"{args.arm}.safetensors", root=args.work / "students")
    store = SynVidStore(args.work / "synvid")
    data, prompts = store.load(), store.prompts()
    ctx, mask = teacher.encode_text(prompts)
    keys = key_timesteps()
    idx = torch.randperm(len(data["prompt_index"]))[:args.n]
    real, ids = data["points"][idx], data["prompt_index"][idx]
    feats = TeacherFeatures(teacher.dit, ctx, mask)
    x = torch.randn(real[:, 0].shape)
    out = {}
    with torch.no_grad():
        for j in range(5):                                   # sampling position j -> j + 1 is key k = 4 - j
            t_hi, t_lo = float(keys[j]), float(keys[j + 1])
            v = student.dit(x, torch.full((len(x),), t_hi * 1000), ctx[ids], mask[ids])
            x = euler_step(x, v, t_hi, t_lo)
            f_real = torch.cat([feats(real[a:a + 32, j + 1], t_lo, ids[a:a + 32]) for a in range(0, args.n, 32)])
            f_gen = torch.cat([feats(x[a:a + 32], t_lo, ids[a:a + 32]) for a in range(0, args.n, 32)])
            out[f"k={4 - j} (t'={t_lo:.4f})"] = _fit_probe(FeatureHead, teacher.dit.config, f_real, f_gen, args)
    print(json.dumps(out, indent=1))  # noqa: T201 - the command's output
    return 0


def _fit_probe(head_cls, dcfg, f_real: torch.Tensor, f_gen: torch.Tensor, args: argparse.Namespace) -> dict[str, float]:
    feats = torch.cat([f_real, f_gen])
    labels = torch.cat([torch.ones(len(f_real)), torch.zeros(len(f_gen))])
    order = torch.randperm(len(feats))
    feats, labels = feats[order], labels[order]
    cut = 3 * len(feats) // 4
    with torch.enable_grad():
        head = head_cls(dcfg.dim, dcfg.latent_size // dcfg.patch)
        opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=0.0)
        for _ in range(args.updates):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(head(feats[:cut]), labels[:cut]).backward()
            opt.step()
    with torch.no_grad():
        train_acc = ((head(feats[:cut]) > 0).float() == labels[:cut]).float().mean()
        test_acc = ((head(feats[cut:]) > 0).float() == labels[cut:]).float().mean()
    return {"train_accuracy": float(train_acc), "heldout_accuracy": float(test_acc)}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
