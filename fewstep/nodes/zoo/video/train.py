"""Training recipe of the built-in video model (one GPU, a few minutes; or a small CPU demo).

    python -m fewstep.nodes.zoo.video.train --out DIR [--preset gpu|cpu|smoke] [--text-cache FILE]

Stages, each bounded by wall time, weights and ``report.json`` rewritten into DIR after each:

1. render procedural clips of the ``train`` captions (``clips.py``; 8- and 16-frame clips with the
   ``gpu`` preset) and encode every frame with the built-in VAE (posterior mean x scaling factor);
2. the 3D-conv feature net (``features.py``): cross-entropy on motion/shape/colour/size, half of each
   batch passed through the VAE so it reads decoded clips the way it reads renders;
3. the video DiT (``dit.py``) by rectified-flow matching (:class:`FlowMatchingLoss`), 10% empty-prompt
   dropout for CFG, EMA;
4. evaluation on held-out captions (``evaluate.py``) at 50, 10 and 5 Euler steps (FD-EffNet only where
   the EfficientNet package is installed).

Text: MiniLM token states of the caption vocabulary. Where the MiniLM package is missing (the GPU
machine), ``--text-cache`` reads them from a file written here by ``write_text_cache`` (real tokens only,
fp16, ~2 MB for the 360 captions and the empty prompt).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fewstep.nodes.core.video_sampling import shift_sigma
from fewstep.nodes.zoo.video import clips
from fewstep.nodes.zoo.video.dit import PRESETS, VideoDiT, config_dict
from fewstep.nodes.zoo.video.features import FEATURES_FILE, ClipFeatureNet, classification_loss, targets
from fewstep.nodes.zoo.video.model import FLOW_MULTIPLIER, VIDEO_MODEL_FILE, TokenEncoder, VideoModel

log = logging.getLogger("fewstep.zoo.video.train")


@dataclass(frozen=True)
class VideoTrainConfig:
    """Hyperparameters of one run (presets in :data:`TRAIN_PRESETS`)."""

    dit_preset: str = "tiny"
    clips_per_length: int = 6000        # training clips rendered per clip length
    lengths: tuple[int, ...] = (8, 16)   # clip lengths (frames) trained on
    dit_seconds: float = 250.0
    dit_batch: int = 128
    dit_lr: float = 4e-4
    warmup: int = 300
    ema_decay: float = 0.999
    cond_dropout: float = 0.1           # empty-prompt rate (for classifier-free guidance)
    train_shift: float = 3.0            # sigma ~ shift(logit-normal(0, 1)) (SD3 Sec. 3.1 + eq. 23)
    feat_seconds: float = 40.0
    feat_batch: int = 64
    feat_lr: float = 2e-3
    feat_vae_mix: float = 0.5           # share of each batch passed through the VAE (decoded clips)
    eval_clips: int = 78                # 2 per held-out caption
    eval_steps: tuple[int, ...] = (50, 10, 5)
    eval_shift: float = 3.0
    eval_cfg: float = 4.0
    max_steps: int = 1_000_000
    seed: int = 0


TRAIN_PRESETS: dict[str, VideoTrainConfig] = {
    "gpu": VideoTrainConfig(),
    # a shared 2-core CPU (one thread): no VAE round trip in the feature net (a decode costs ~1 GFLOP a frame)
    "cpu": VideoTrainConfig(dit_preset="cpu-demo", clips_per_length=240, lengths=(8,), dit_seconds=480.0,
                            dit_batch=16, dit_lr=1e-3, feat_seconds=90.0, feat_batch=16, feat_vae_mix=0.0,
                            eval_clips=39, eval_steps=(50, 10, 5), warmup=50, ema_decay=0.995),
    "smoke": VideoTrainConfig(dit_preset="test", clips_per_length=16, lengths=(8,), dit_seconds=3.0, dit_batch=4,
                              feat_seconds=2.0, feat_batch=4, eval_clips=4, eval_steps=(2,), warmup=2),
}


# ----------------------------------------------------------------------------- text tokens
class TextTokenCache:
    """Precomputed MiniLM real-token states of a fixed caption set; a :class:`TokenEncoder`.

    File (safetensors): ``states [sum L_i, 384]`` fp16 (caption i's tokens in rows offsets[i]:offsets[i+1]),
    ``offsets [n + 1]``; the captions in the JSON metadata ``captions``."""

    def __init__(self, states: torch.Tensor, offsets: torch.Tensor, captions: list[str]):
        self.states, self.offsets = states, offsets
        self.index = {c: i for i, c in enumerate(captions)}

    @classmethod
    def load(cls, path: str | Path) -> TextTokenCache:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            captions = json.loads(f.metadata()["captions"])
            return cls(f.get_tensor("states"), f.get_tensor("offsets"), captions)

    def encode_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [t for t in texts if t not in self.index]
        if missing:
            raise ValueError(f"TextTokenCache: {missing[0]!r} is not in the cache (write it with write_text_cache)")
        rows = [self.states[self.offsets[self.index[t]]:self.offsets[self.index[t] + 1]] for t in texts]
        length = max(len(r) for r in rows)
        out = torch.zeros(len(rows), length, self.states.shape[1])
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)], mask[i, :len(r)] = r.float(), 1
        return out, mask


def write_text_cache(path: str | Path, captions: list[str] | None = None, encoder: TokenEncoder | None = None) -> Path:
    """MiniLM real-token states of ``captions`` (default: every caption and "") into ``path``."""
    from safetensors.torch import save_file

    if encoder is None:
        from fewstep.nodes.zoo.lean import load_minilm

        encoder = load_minilm()
    captions = clips.all_captions() + [""] if captions is None else captions
    rows = []
    for i in range(0, len(captions), 64):
        states, mask = encoder.encode_tokens(captions[i:i + 64])
        rows += [s[m.bool()].half() for s, m in zip(states, mask, strict=True)]
    offsets = torch.tensor([0] + list(np.cumsum([len(r) for r in rows])), dtype=torch.long)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"states": torch.cat(rows).contiguous(), "offsets": offsets}, str(path),
              metadata={"captions": json.dumps(captions)})
    return path


# ----------------------------------------------------------------------------- data
def _render_job(job: tuple[int, int, int]) -> np.ndarray:
    seed, n, frames = job
    return np.stack([clips.render_clip(s) for s in clips.make_split("train", n, frames, seed)])


def render_training_clips(n: int, frames: int, seed: int, workers: int) -> tuple[torch.Tensor, list[clips.ClipSpec]]:
    """``n`` train-split clips ``[n, frames, 64, 64, 3]`` uint8 and their specs (chunks of 500 in parallel)."""
    import multiprocessing as mp

    jobs = [(seed * 10_000 + frames * 100 + k, min(500, n - k * 500), frames) for k in range(math.ceil(n / 500))]
    with mp.get_context("fork").Pool(max(1, workers)) as pool:
        parts = pool.map(_render_job, jobs)
    specs = [s for (sd, m, fr) in jobs for s in clips.make_split("train", m, fr, sd)]
    return torch.from_numpy(np.concatenate(parts)), specs


@torch.no_grad()
def encode_clips(model: VideoModel, frames: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Scaled latents ``[N, T, 4, 16, 16]`` (fp16, on the model's device) of uint8 clips."""
    out = [model.encode_frames(frames[i:i + batch].to(model.device)).half() for i in range(0, len(frames), batch)]
    return torch.cat(out)


def _timed(seconds: float, max_steps: int) -> Iterator[int]:
    t0, step = time.time(), 0
    while step < max_steps and time.time() - t0 < seconds:
        yield step
        step += 1


def _ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(pm, 1 - decay)


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def fp16_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------- losses
@dataclass(frozen=True)
class FlowMatchingLoss:
    """Rectified-flow matching (Liu et al. 2022; Lipman et al. 2023; Esser et al. 2024, SD3 eq. 1-2):

        x_sigma = (1 - sigma) x0 + sigma eps,    L = E || v_theta(x_sigma, sigma, c) - (eps - x0) ||^2

    with sigma = shift u / (1 + (shift - 1) u), u = sigmoid(n), n ~ N(0, 1) (SD3 Sec. 3.1 logit-normal
    sampling, eq. 23 shift). Returns the per-sample loss ``[B]``."""

    shift: float = 3.0

    def __call__(self, dit: VideoDiT, x0: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        b = x0.shape[0]
        u = torch.sigmoid(torch.randn(b, device=x0.device, generator=generator))
        sigma = shift_sigma(u, self.shift)
        s = sigma.view(b, 1, 1, 1, 1)
        eps = torch.randn(x0.shape, device=x0.device, generator=generator)
        x = (1 - s) * x0 + s * eps
        v = dit(x, sigma * FLOW_MULTIPLIER, ctx, mask)
        return ((v.float() - (eps - x0)) ** 2).flatten(1).mean(1)


# ----------------------------------------------------------------------------- stages
def train_features(cfg: VideoTrainConfig, sets: dict[int, dict], model: VideoModel | None,
                   device: torch.device) -> tuple[ClipFeatureNet, dict]:
    """Feature net on clips of every length; a share ``cfg.feat_vae_mix`` of each batch round-trips through
    the VAE of ``model`` (None: renders only, ``feat_vae_mix`` must be 0)."""
    net = ClipFeatureNet().to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.feat_lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    lengths, t0, losses, step = sorted(sets), time.time(), [], 0
    for step in _timed(cfg.feat_seconds, cfg.max_steps):
        part = sets[lengths[step % len(lengths)]]
        idx = torch.randint(0, len(part["frames"]), (cfg.feat_batch,), generator=gen)
        frames = part["frames"][idx].to(device).float() / 255.0
        half = int(cfg.feat_batch * cfg.feat_vae_mix)
        if half and model is not None:
            frames[:half] = model.decode(part["latents"][idx[:half].to(device)].float()).to(device)
        target = {k: v[idx] for k, v in part["targets"].items()}
        with _autocast(device):
            loss = classification_loss(net, frames, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item()) if step % 20 == 0 else None
    log.info("features: %d steps in %.0fs, loss %.4f", step + 1, time.time() - t0, losses[-1])
    return net.eval().requires_grad_(False), {"steps": step + 1, "seconds": time.time() - t0, "batch": cfg.feat_batch,
                                              "lr": cfg.feat_lr, "final_loss": losses[-1]}


@torch.no_grad()
def feature_accuracy(net: ClipFeatureNet, frames: torch.Tensor, specs: list[clips.ClipSpec]) -> dict[str, float]:
    """Per-head accuracy of the feature net on clips (held-out captions)."""
    p = next(net.parameters())
    logits = net(frames.to(p.device).float() / 255.0)
    return {f"{k}_accuracy": float((logits[k].argmax(-1).cpu() == t).float().mean()) for k, t in targets(specs).items()}


def _text_table(model: VideoModel, captions: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ctx, mask = model.encode_text(captions)                  # [n, L, 384], [n, L]
    return ctx.to(device), mask.to(device)


def train_dit(cfg: VideoTrainConfig, sets: dict[int, dict], model: VideoModel, captions: list[str],
              device: torch.device) -> tuple[VideoDiT, dict]:
    """Flow matching on the latents of ``sets``; returns the EMA DiT (also written into ``model.dit``)."""
    dit = VideoDiT(PRESETS[cfg.dit_preset]).to(device).train()
    ema = copy.deepcopy(dit).eval().requires_grad_(False)
    opt = torch.optim.AdamW(dit.parameters(), lr=cfg.dit_lr, weight_decay=0.01)
    ctx_table, mask_table = _text_table(model, captions + [""], device)
    empty = len(captions)
    loss_fn, gen = FlowMatchingLoss(cfg.train_shift), torch.Generator(device).manual_seed(cfg.seed + 2)
    lengths, t0, losses, step = sorted(sets), time.time(), [], 0
    for step in _timed(cfg.dit_seconds, cfg.max_steps):
        part = sets[lengths[step % len(lengths)]]
        idx = torch.randint(0, len(part["latents"]), (cfg.dit_batch,), device=device, generator=gen)
        cap = part["caption_ids"][idx]
        cap = torch.where(torch.rand(len(idx), device=device, generator=gen) < cfg.cond_dropout, empty, cap)
        for g in opt.param_groups:
            g["lr"] = cfg.dit_lr * min(1.0, (step + 1) / cfg.warmup)
        with _autocast(device):
            loss = loss_fn(dit, part["latents"][idx].float(), ctx_table[cap], mask_table[cap], gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
        _ema(ema, dit, min(cfg.ema_decay, (1 + step) / (10 + step)))
        losses.append(loss.item()) if step % 50 == 0 else None
        if step % 2000 == 0:
            log.info("dit step %d loss %.4f (%.0fs)", step, losses[-1], time.time() - t0)
    log.info("dit: %d steps in %.0fs", step + 1, time.time() - t0)
    model.dit = ema
    return ema, {"steps": step + 1, "seconds": time.time() - t0, "batch": cfg.dit_batch, "lr": cfg.dit_lr,
                 "final_loss_mean_last_10_logged": float(np.mean(losses[-10:])), "ema_decay": cfg.ema_decay,
                 "cond_dropout": cfg.cond_dropout, "train_shift": cfg.train_shift, "lengths": list(cfg.lengths)}


def render_sets(cfg: VideoTrainConfig, workers: int) -> dict[int, tuple[torch.Tensor, list[clips.ClipSpec]]]:
    """Training clips per length (rendered in worker processes, before CUDA starts: fork-safe)."""
    return {length: render_training_clips(cfg.clips_per_length, length, cfg.seed, workers) for length in cfg.lengths}


def build_sets(rendered: dict[int, tuple[torch.Tensor, list[clips.ClipSpec]]], model: VideoModel,
               captions: list[str], device: torch.device) -> dict[int, dict]:
    """Per clip length: uint8 frames (CPU), VAE latents, caption ids (device) and feature-net targets."""
    index = {c: i for i, c in enumerate(captions)}
    sets = {}
    for length, (frames, specs) in rendered.items():
        sets[length] = {"frames": frames, "specs": specs, "latents": encode_clips(model, frames),
                        "caption_ids": torch.tensor([index[s.caption()] for s in specs], device=device),
                        "targets": targets(specs)}
        log.info("data: %d clips of %d frames", len(specs), length)
    return sets


def evaluate_stage(cfg: VideoTrainConfig, model: VideoModel, featnet: ClipFeatureNet, device: torch.device,
                   use_effnet: bool, out_dir: Path | None = None) -> dict:
    """Held-out quality of ``model`` at each of ``cfg.eval_steps`` Euler steps, plus the real-clip floor.

    With ``out_dir``, the clips are also saved (``eval_clips.npz``, uint8: ``reference`` and ``euler_<n>``) so
    that FD-EffNet can be measured later where the EfficientNet package is installed."""
    from fewstep.nodes.zoo.builtin import load_probe
    from fewstep.nodes.zoo.video import evaluate as ev

    probe = load_probe(device)
    effnet = None
    if use_effnet:
        from fewstep.nodes.zoo.effnet import load_efficientnet_lite0

        effnet = load_efficientnet_lite0(device=device)
    specs = ev.heldout_specs(cfg.eval_clips, clips.FRAMES, cfg.seed)
    reference = ev.render_specs(specs)
    out = {"reference": ev.evaluate_reference(specs, reference, probe=probe, featnet=featnet, effnet=effnet),
           "features_heldout": feature_accuracy(featnet, reference, specs)}
    kept = {"reference": reference.numpy()}
    for steps in cfg.eval_steps:
        frames, seconds = ev.generate_clips(model, specs, steps=steps, shift=cfg.eval_shift, cfg=cfg.eval_cfg,
                                            seed=cfg.seed)
        metrics = ev.evaluate_clips(frames, specs, probe=probe, featnet=featnet, reference=reference, effnet=effnet)
        out[f"euler_{steps}"] = {**metrics, "steps": steps, "shift": cfg.eval_shift, "cfg": cfg.eval_cfg,
                                 "sampler": "flow_euler", "clips": len(specs), "seconds_per_clip": seconds}
        kept[f"euler_{steps}"] = (frames * 255).round().byte().numpy()
        log.info("eval %d steps: %s", steps, out[f"euler_{steps}"])
        if out_dir is not None:
            np.savez_compressed(out_dir / "eval_clips.npz", **kept)
    return out


def model_info(cfg: VideoTrainConfig) -> dict:
    """The JSON config written beside the DiT weights (what ``model.load_dit`` reads)."""
    return {"dit": config_dict(PRESETS[cfg.dit_preset]), "fps": clips.FPS, "prediction": "flow",
            "flow_multiplier": FLOW_MULTIPLIER, "vae": "fewstep-tiny-vae.safetensors",
            "text_encoder": "all-MiniLM-L6-v2 token states (real tokens, no padding)",
            "frames_trained": list(cfg.lengths), "default_shift": cfg.eval_shift, "default_cfg": cfg.eval_cfg}


def save_outputs(out: Path, cfg: VideoTrainConfig, report: dict, dit: VideoDiT | None,
                 featnet: ClipFeatureNet | None) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    if dit is not None:
        save_file(fp16_state(dit), str(out / VIDEO_MODEL_FILE))
        (out / VIDEO_MODEL_FILE).with_suffix(".json").write_text(json.dumps(model_info(cfg), indent=1))
    if featnet is not None:
        save_file(fp16_state(featnet), str(out / FEATURES_FILE))
        (out / FEATURES_FILE).with_suffix(".json").write_text(json.dumps({"net": {"width": 16, "dim": 64}}, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))


def _empty_model(cfg: VideoTrainConfig, text: TokenEncoder, device: torch.device) -> VideoModel:
    from fewstep.nodes.zoo.builtin import load_vae

    vae, scale = load_vae(device, torch.float32, lean=True)
    return VideoModel(VideoDiT(PRESETS[cfg.dit_preset]).to(device), vae, scale, text)


def run(cfg: VideoTrainConfig, out: Path, text: TokenEncoder, device: torch.device, workers: int,
        use_effnet: bool) -> dict:
    """All stages; returns the report (also in ``out/report.json``)."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    report: dict = {"config": asdict(cfg), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    t0 = time.time()
    rendered = render_sets(cfg, workers)                # before CUDA initialises (fork)
    log.info("rendered in %.0fs", time.time() - t0)
    report["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    model = _empty_model(cfg, text, device)
    captions = clips.split_captions("train")
    sets = build_sets(rendered, model, captions, device)
    featnet, report["features"] = train_features(cfg, sets, model, device)
    save_outputs(out, cfg, report, None, featnet)
    dit, report["dit"] = train_dit(cfg, sets, model, captions, device)
    report["parameters"] = sum(p.numel() for p in dit.parameters())
    save_outputs(out, cfg, report, dit, featnet)
    report["eval"] = evaluate_stage(cfg, model, featnet, device, use_effnet, out)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    save_outputs(out, cfg, report, dit, featnet)
    return report


def run_features_only(cfg: VideoTrainConfig, out: Path, device: torch.device, workers: int) -> dict:
    """Only the feature net, on renders (no VAE round trip); writes its weights and ``features-report.json``."""
    from fewstep.nodes.zoo.video import evaluate as ev

    rendered = render_sets(cfg, workers)
    sets = {length: {"frames": frames, "specs": specs, "targets": targets(specs)}
            for length, (frames, specs) in rendered.items()}
    net, stats = train_features(replace(cfg, feat_vae_mix=0.0), sets, None, device)
    specs = ev.heldout_specs(cfg.eval_clips, clips.FRAMES, cfg.seed)
    report = {"config": asdict(cfg), "features": stats, "device": str(device),
              "features_heldout": feature_accuracy(net, ev.render_specs(specs), specs)}
    save_outputs(out, cfg, {}, None, net)
    (out / "features-report.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the built-in video model (DiT + feature net) and evaluate it.")
    p.add_argument("--out", required=True, type=Path, help="folder for weights, configs and report.json")
    p.add_argument("--preset", default="gpu", choices=sorted(TRAIN_PRESETS), help="training preset (default gpu)")
    p.add_argument("--text-cache", type=Path, default=None,
                   help="token-state cache from write_text_cache (default: encode with the installed MiniLM)")
    p.add_argument("--write-text-cache", type=Path, default=None, help="only write the token cache to this file")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--workers", type=int, default=8, help="processes rendering clips (default 8)")
    p.add_argument("--dit-seconds", type=float, default=None, help="override the preset's DiT training time")
    p.add_argument("--features-only", action="store_true", help="train only the feature net (renders, no VAE)")
    p.add_argument("--feat-seconds", type=float, default=None, help="override the preset's feature-net time")
    p.add_argument("--clips", type=int, default=None, help="override the preset's clips per length")
    p.add_argument("--effnet", action="store_true", help="also measure FD-EffNet (needs the EfficientNet package)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.write_text_cache:
        write_text_cache(args.write_text_cache)
        return
    cfg = TRAIN_PRESETS[args.preset]
    cfg = cfg if args.dit_seconds is None else replace(cfg, dit_seconds=args.dit_seconds)
    cfg = cfg if args.feat_seconds is None else replace(cfg, feat_seconds=args.feat_seconds)
    cfg = cfg if args.clips is None else replace(cfg, clips_per_length=args.clips)
    device = torch.device(args.device)
    if args.features_only:
        run_features_only(cfg, args.out, device, args.workers)
        return
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    text = TextTokenCache.load(args.text_cache) if args.text_cache else None
    if text is None:
        from fewstep.nodes.zoo.lean import load_minilm

        text = load_minilm(device="cpu")
    run(cfg, args.out, text, device, args.workers, args.effnet)


if __name__ == "__main__":  # pragma: no cover
    main()
