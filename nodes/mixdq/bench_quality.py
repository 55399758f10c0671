"""Quality of MixDQ against a naive uniform quantizer on the zoo's built-in text-to-image model.

The model is the zoo teacher sampled with few DDIM steps and CFG (no distilled student is shipped yet).
Calibration prompts come from the zoo's train split, evaluation prompts from its held-out split. For each
configuration the bench reports FD-EffNet (Frechet distance of EfficientNet-Lite0 pooled features) to
renders of the evaluation scenes and to the full-precision samples, attribute accuracy by the zoo probe,
and SSIM / PSNR against the full-precision samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from nodes.mixdq.allocate import make_config, mixdq_config, uniform_config
from nodes.mixdq.calibrate import calibrate
from nodes.mixdq.quantize import quantize_network
from nodes.mixdq.sensitivity import Sensitivity, analyze, ssim


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al. 2017, eq. for FID)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(s_a @ s_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * np.real(root)))


class _Setup:
    """The zoo model, prompts, metric networks and runners shared by every configuration."""

    def __init__(self, n: int, steps: int, n_calib: int, device: torch.device) -> None:
        from nodes.zoo import data
        from nodes.zoo.builtin import BUILTIN_CHECKPOINT, load_builtin, load_probe
        from nodes.zoo.effnet import load_efficientnet_lite0

        self.device, self.steps = device, steps
        self.bundle = load_builtin(BUILTIN_CHECKPOINT, device)
        self.probe = load_probe(device)
        self.effnet = load_efficientnet_lite0(device=device)
        self.scenes = data.make_split("heldout", n, seed=0)
        calib_scenes = data.make_split("train", n_calib, seed=1)
        enc = self.bundle.text_encoder
        self.cond = enc.encode([data.caption(s) for s in self.scenes])[0].to(device)
        self.calib_cond = enc.encode([data.caption(s) for s in calib_scenes])[0].to(device)
        self.uncond = enc.encode([""])[0].to(device)
        factor = 2 ** (len(self.bundle.vae.config.block_out_channels) - 1)     # VAE downsampling
        res = self.bundle.image_size // factor
        self.latent_shape = (self.bundle.latent_channels, res, res)
        renders = [torch.from_numpy(np.asarray(data.render(s, self.bundle.image_size))).float() / 255
                   for s in self.scenes]
        self.real_feats = self.features(torch.stack(renders)[..., :3].to(device))

    def _sample(self, net: nn.Module, cond: torch.Tensor, seed: int) -> torch.Tensor:
        from nodes.zoo.models import ddim_sample

        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(cond.shape[0], *self.latent_shape, generator=g).to(self.device)
        latents = ddim_sample(net, cond, self.uncond.expand(cond.shape[0], -1, -1), noise, steps=self.steps,
                              schedule=self.bundle.schedule)
        return self.decode(latents)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images [B, 3, H, W] in 0..1."""
        x = self.bundle.vae.decode(latents.float() / self.bundle.vae_scaling_factor).sample.float()
        return ((x + 1) / 2).clamp(0, 1)

    def calib_runner(self, net: nn.Module) -> torch.Tensor:
        return self._sample(net, self.calib_cond, seed=1)

    def eval_images(self, net: nn.Module) -> torch.Tensor:
        return self._sample(net, self.cond, seed=0)

    @torch.no_grad()
    def features(self, images_bhwc: torch.Tensor) -> np.ndarray:
        from nodes.zoo.effnet import features

        return features(self.effnet, images_bhwc).double().cpu().numpy()


def _metrics(setup: _Setup, images: torch.Tensor, fp_images: torch.Tensor, fp_feats: np.ndarray) -> dict:
    bhwc = images.permute(0, 2, 3, 1)
    feats = setup.features(bhwc)
    mse = float((images - fp_images).pow(2).mean())
    return {"fd_effnet_real": frechet_distance(feats, setup.real_feats),
            "fd_effnet_vs_fp": frechet_distance(feats, fp_feats),
            "attribute_accuracy": setup.probe.attribute_accuracy(bhwc, setup.scenes),
            "ssim_vs_fp": ssim(fp_images, images), "psnr_vs_fp": float(10 * np.log10(1.0 / max(mse, 1e-12)))}


def configurations(sens: Sensitivity, evaluate: Callable[[dict[str, int]], float]) -> dict[str, dict]:
    """Every configuration of the table: MixDQ and naive at W8A8 / W4A8, and the ablations."""
    mix8 = mixdq_config(sens, 8.0, 8.0)
    uni8 = uniform_config(sens, 8, 8)
    return {
        "MixDQ W8A8": mix8,
        "naive W8A8": uni8,
        "naive W8A8 + BOS-aware": make_config(sens, uni8["weight_bits"], uni8["act_bits"], budget=8,
                                              act_budget=8, bos_aware=True, method="uniform+bos"),
        "MixDQ W8A8 without BOS": mixdq_config(sens, 8.0, 8.0, bos_aware=False),
        "MixDQ W4A8": mixdq_config(sens, 4.0, 8.0, evaluate=evaluate),
        "MixDQ W4A8 SQNR-only": mixdq_config(sens, 4.0, 8.0, decoupled=False, evaluate=evaluate),
        "naive W4A8": uniform_config(sens, 4, 8),
    }


def run_quality(n: int = 64, steps: int = 4, n_calib: int = 8, device: str | None = None,
                log: Callable[[str], None] = lambda s: None) -> list[dict]:
    """All rows of the quality table (see the module docstring)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.time()
    setup = _Setup(n, steps, n_calib, dev)
    net = setup.bundle.unet
    calib = calibrate(net, setup.calib_runner)
    # Probes as the allocator needs them: content weights 2/4/8, quality weights 4/8, activations 8
    # (the activation choices are {8, 16}); SQNR over the first and last sampler call.
    sens = analyze(net, setup.calib_runner, calib, weight_bits=(2, 4, 8), quality_weight_bits=(4, 8),
                   act_bits=(8,), max_calls=2,
                   progress=lambda i, total: log(f"probe {i}/{total} {time.time() - t0:.0f} s") if i % 50 == 0 else None)
    log(f"calibration + {len(sens.group)}-layer sensitivity: {time.time() - t0:.0f} s "
        f"(BOS precomputable: {sens.bos_embedding is not None})")

    def evaluate(weight_bits: dict[str, int]) -> float:      # weights-only candidate vs FP samples (MixDQ)
        cfg = make_config(sens, weight_bits, {}, budget=0, act_budget=16, bos_aware=False, method="probe")
        return float((setup.calib_runner(quantize_network(net, cfg)) - calib.fp_output).pow(2).mean())

    fp_images = setup.eval_images(net)
    fp_feats = setup.features(fp_images.permute(0, 2, 3, 1))
    rows = [{"config": "full precision (fp32)", "mean_weight_bits": 32.0, "keep_fp": 0,
             **_metrics(setup, fp_images, fp_images, fp_feats)}]
    for name, cfg in configurations(sens, evaluate).items():
        images = setup.eval_images(quantize_network(net, cfg))
        rows.append({"config": name, "mean_weight_bits": cfg["mean_weight_bits"], "keep_fp": len(cfg["keep_fp"]),
                     **_metrics(setup, images, fp_images, fp_feats)})
        log(f"{name}: {rows[-1]}")
    return rows


def quality_table(rows: list[dict]) -> str:
    """Markdown table of :func:`run_quality` rows."""
    lines = ["| config | mean W bits | act layers kept 16-bit | FD-EffNet to renders | FD-EffNet to FP | "
             "attribute acc. | SSIM vs FP | PSNR vs FP dB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['mean_weight_bits']:.2f} | {r['keep_fp']} | {r['fd_effnet_real']:.2f} | "
                     f"{r['fd_effnet_vs_fp']:.2f} | {r['attribute_accuracy']:.3f} | {r['ssim_vs_fp']:.3f} | "
                     f"{r['psnr_vs_fp']:.1f} |")
    return "\n".join(lines)
