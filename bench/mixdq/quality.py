"""Quality of MixDQ against a naive uniform quantizer on the zoo's few-step student (one command).

Model: the shipped MLCM student (``fewstep/nodes/mlcm/weights/fewstep-mlcm-student.safetensors``: the built-in
teacher's UNet with its LoRA merged), sampled at 4 steps with the LCM sampler on TLCM's milestones and no
CFG, exactly as the distillation table samples it (``nodes.mlcm.table.make_sampler``). Calibration prompts
come from the zoo's train split, evaluation prompts from its held-out split. Per configuration the bench
reports FD-EffNet to renders of the evaluation scenes and to the full-precision samples, attribute accuracy
(zoo probe), and SSIM / PSNR against the full-precision samples (same noise, same re-noising seed).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from fewstep.nodes.mixdq.allocate import make_config, mean_act_bits, mixdq_config, uniform_config
from fewstep.nodes.mixdq.calibrate import calibrate
from fewstep.nodes.mixdq.quantize import quantize_network
from fewstep.nodes.mixdq.sensitivity import Sensitivity, analyze, ssim

STUDENT = "MLCM stage 2"           # the row of nodes.mlcm.table whose weights the bench quantizes


class _Setup:
    """The student, prompts, metric networks and runners shared by every configuration."""

    def __init__(self, n: int, steps: int, n_calib: int, device: torch.device, minilm: str | None,
                 effnet: str | None, student: str | None = None) -> None:
        from fewstep.bench.mlcm.table import (
            STUDENT_FILES,
            Judge,
            core_schedule,
            eval_prompts,
            reference_stats,
        )
        from fewstep.nodes.core.train.builtin import load_student
        from fewstep.nodes.mlcm.students import weights_dir
        from fewstep.nodes.zoo import data
        from fewstep.nodes.zoo.builtin import load_vae
        from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder

        self.device, self.steps = device, steps
        path = student or weights_dir() / STUDENT_FILES[STUDENT]
        self.student_sha256 = hashlib.sha256(open(path, "rb").read()).hexdigest()
        self.unet = load_student(path, str(device), torch.float32)
        self.schedule = core_schedule()
        self.vae, self.vae_scale = load_vae(device, torch.float32)
        enc = MiniLMTextEncoder.load(minilm, str(device))
        self.judge = Judge(str(device), effnet, enc)
        self.scenes, prompts = eval_prompts(n)
        calib_prompts = [data.caption(s) for s in data.make_split("train", n_calib, seed=1)]
        self.cond = enc.encode_tokens(prompts)[0].to(device)                    # [n, 77, 384]
        self.calib_cond = enc.encode_tokens(calib_prompts)[0].to(device)
        self.uncond = enc.encode_tokens([""])[0].to(device)
        self.noise = torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(1234)).to(device)
        self.calib_noise = torch.randn(n_calib, 4, 16, 16, generator=torch.Generator().manual_seed(99)).to(device)
        real = torch.stack([torch.from_numpy(np.asarray(data.render(s), dtype=np.float32) / 255.0)
                            for s in self.scenes]).to(device)
        self.real_ref = reference_stats(self.judge.features(real))

    @torch.no_grad()
    def _sample(self, net: nn.Module, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in 0..1 of the student's ``steps``-step LCM sampling with ``net``."""
        from fewstep.bench.mlcm.table import decode, make_sampler

        run = make_sampler(STUDENT, self.steps, net, self.schedule)
        gen = torch.Generator(self.device).manual_seed(7)                     # the re-noising draws
        latents = run(noise, {"context": cond}, {"context": self.uncond}, gen)
        return decode(self.vae, self.vae_scale, latents).permute(0, 3, 1, 2)

    def calib_runner(self, net: nn.Module) -> torch.Tensor:
        return self._sample(net, self.calib_noise, self.calib_cond)

    def eval_images(self, net: nn.Module) -> torch.Tensor:
        return self._sample(net, self.noise, self.cond)


def _metrics(setup: _Setup, images: torch.Tensor, fp_images: torch.Tensor, fp_ref: tuple) -> dict:
    from fewstep.bench.mlcm.table import frechet

    bhwc = images.permute(0, 2, 3, 1)
    feats = setup.judge.features(bhwc)
    mse = float((images - fp_images).pow(2).mean())
    return {"fd_effnet_real": frechet(*setup.real_ref, feats), "fd_effnet_vs_fp": frechet(*fp_ref, feats),
            "attribute_accuracy": setup.judge.probe.attribute_accuracy(bhwc, setup.scenes),
            "ssim_vs_fp": ssim(fp_images, images), "psnr_vs_fp": float(10 * np.log10(1.0 / max(mse, 1e-12)))}


def configurations(sens: Sensitivity, evaluate: Callable[[dict[str, int]], float]) -> dict[str, dict]:
    """Every configuration of the table: MixDQ and naive at W8A8 / W4A8, the BOS and metric ablations,
    and the rows that diagnose the W4A8 allocation (2-bit content layers or not, weights alone)."""
    uni8 = uniform_config(sens, 8, 8)
    uni4 = uniform_config(sens, 4, 8)
    mix4 = mixdq_config(sens, 4.0, 8.0, evaluate=evaluate)                       # content {2, 4, 8}, the paper's
    mix4_48 = mixdq_config(sens, 4.0, 8.0, evaluate=evaluate, content_bits=(4, 8))
    return {
        "MixDQ W8A8": mixdq_config(sens, 8.0, 8.0),
        "naive W8A8": uni8,
        "naive W8A8 + BOS-aware": make_config(sens, uni8["weight_bits"], uni8["act_bits"], budget=8,
                                              act_budget=8, bos_aware=True, method="uniform+bos"),
        "MixDQ W8A8 without BOS": mixdq_config(sens, 8.0, 8.0, bos_aware=False),
        "MixDQ W4A8": mix4,
        "MixDQ W4A8, content {4,8} bits": mix4_48,
        "MixDQ W4A8 SQNR-only": mixdq_config(sens, 4.0, 8.0, decoupled=False, evaluate=evaluate),
        "naive W4A8": uni4,
        "MixDQ W4A16 (weights alone)": _weights_only(sens, mix4),
        "MixDQ W4A16, content {4,8} (weights alone)": _weights_only(sens, mix4_48),
        "naive W4A16 (weights alone)": _weights_only(sens, uni4),
    }


ACT_BUDGET = 7.7          # MixDQ's activation target with 1 % of the layers kept FP16 (methods.md Sec. 7)


def act_configurations(sens: Sensitivity, evaluate: Callable[[dict[str, int]], float],
                       act_evaluate: Callable[[dict[str, int], dict[str, int]], float]) -> dict[str, dict]:
    """The activation table: MixDQ with uniform A8 (+1 % FP16) and with {4, 8} activations at 7.7 mean
    bits (+1 % FP16), at W8 and W4, against uniform quantization at W8A8 / W8A4 / W4A8 / W4A4 (the bracket
    of the mixed rows) and two ablations of the mixed allocation at the same mean bits: scored by SQNR
    only, and a random {4, 8} choice (seed 0) with the same share of 4-bit input elements."""
    mix = {"act_bits": (4, 8), "act_evaluate": act_evaluate}
    w8 = mixdq_config(sens, 8.0, 8.0)
    w4 = mixdq_config(sens, 4.0, 8.0, evaluate=evaluate)                     # content {2, 4, 8}, the paper's
    w8_mix = mixdq_config(sens, 8.0, ACT_BUDGET, **mix)
    w4_mix = _with_weights(sens, w4, mixdq_config(sens, 4.0, ACT_BUDGET, **mix))
    w4_sqnr = _with_weights(sens, w4, mixdq_config(sens, 4.0, ACT_BUDGET, act_bits=(4, 8), decoupled=False))
    return {
        "naive W8A8": uniform_config(sens, 8, 8),
        "MixDQ W8A8 (1 % A16)": w8,
        "MixDQ W8A-mixed {4,8} (1 % A16)": w8_mix,
        "naive W8A4": uniform_config(sens, 8, 4),
        "naive W4A8": uniform_config(sens, 4, 8),
        "MixDQ W4A8 (1 % A16)": w4,
        "MixDQ W4A-mixed {4,8} (1 % A16)": w4_mix,
        "MixDQ W4A-mixed, acts SQNR-only": w4_sqnr,
        "MixDQ W4A-mixed, random acts": _with_weights(sens, w4, _random_acts(sens, w4_mix)),
        "naive W4A4": uniform_config(sens, 4, 4),
    }


def _with_weights(sens: Sensitivity, weights_cfg: dict, acts_cfg: dict) -> dict:
    """``acts_cfg``'s activations under ``weights_cfg``'s weights (the weight split scan is then shared)."""
    return make_config(sens, weights_cfg["weight_bits"], acts_cfg["act_bits"], budget=weights_cfg["budget"],
                       act_budget=acts_cfg["act_budget"], bos_aware=acts_cfg["bos_aware"], method=acts_cfg["method"])


def _random_acts(sens: Sensitivity, cfg: dict) -> dict:
    """``cfg`` with its 4-/8-bit activation choices reassigned at random among the same layers, 4 bits
    until the 4-bit share of input elements reaches ``cfg``'s (16-bit layers unchanged)."""
    names = [n for n, b in cfg["act_bits"].items() if b < 16]
    size = {n: max(sens.a_size[n], 1) for n in names}
    share4 = sum(size[n] for n in names if cfg["act_bits"][n] == 4)
    order = np.random.default_rng(0).permutation(len(names))
    acts, spent = dict(cfg["act_bits"]), 0
    for i in order:
        n = names[i]
        acts[n] = 4 if spent + size[n] <= share4 else 8
        spent += size[n] if acts[n] == 4 else 0
    return make_config(sens, cfg["weight_bits"], acts, budget=cfg["budget"], act_budget=cfg["act_budget"],
                       bos_aware=cfg["bos_aware"], method="random-acts")


def _weights_only(sens: Sensitivity, cfg: dict) -> dict:
    return make_config(sens, cfg["weight_bits"], {}, budget=cfg["budget"], act_budget=16, bos_aware=False,
                       method=cfg["method"] + "-w-only")


def allocation_summary(cfg: dict, sens: Sensitivity) -> dict[str, Any]:
    """How many layers (and what share of the weights) sit at each width, per group; the layers kept 16-bit."""
    out: dict[str, Any] = {"keep_fp": list(cfg["keep_fp"])}
    for bits in sorted({int(b) for b in cfg["act_bits"].values()}):
        picked = [n for n, b in cfg["act_bits"].items() if int(b) == bits]
        out[f"act{bits}"] = {"layers": len(picked), "content_layers": sum(sens.group[n] == "content" for n in picked)}
    if 4 in {int(b) for b in cfg["act_bits"].values()} and len(set(cfg["act_bits"].values()) - {16}) > 1:
        out["act4_layers"] = sorted(n for n, b in cfg["act_bits"].items() if int(b) == 4)
    for group in ("content", "quality"):
        names = [n for n, g in sens.group.items() if g == group and n in cfg["weight_bits"]]
        total = sum(sens.w_size[n] for n in names) or 1
        for bits in sorted({int(cfg["weight_bits"][n]) for n in names}):
            picked = [n for n in names if int(cfg["weight_bits"][n]) == bits]
            out[f"{group}_w{bits}"] = {"layers": len(picked), "weight_share": sum(sens.w_size[n] for n in picked) / total}
    return out


def run_quality(n: int = 64, steps: int = 4, n_calib: int = 32, device: str | None = None,
                log: Callable[[str], None] = lambda s: None, minilm: str | None = None,
                effnet: str | None = None, max_calls: int | None = 2, reuse: str | None = None,
                student: str | None = None, acts: bool = False) -> dict[str, Any]:
    """The rows of the quality table and each configuration's allocation (see the module docstring).
    ``reuse``: a JSON this bench wrote earlier with the same calibration *and student*; its probe scores are
    used instead of probing again (the probes are ~45 of the ~55 CPU minutes). ``student``: another student
    file than the shipped one (its sha256 is recorded: the shipped weights can be retrained in place).
    ``acts``: the activation table (:func:`act_configurations`) instead; activations are probed at 4 and 8
    bits (afresh even with ``reuse``, whose weight probes are kept)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.time()
    setup = _Setup(n, steps, n_calib, dev, minilm, effnet, student)
    log(f"student {student or STUDENT} sha256 {setup.student_sha256[:16]}")
    net = setup.unet
    calib = calibrate(net, setup.calib_runner)
    log(f"setup + calibration on {n_calib} prompts: {time.time() - t0:.0f} s")
    progress = lambda i, total: log(f"probe {i}/{total} {time.time() - t0:.0f} s") if i % 50 == 0 else None  # noqa: E731
    act_probe = (4, 8) if acts else (8,)
    if reuse is not None:
        sens = sensitivity_from_json(reuse, calib, expect_sha256=setup.student_sha256)
        log(f"sensitivity of {len(sens.group)} layers read from {reuse}")
        if acts:
            fresh = analyze(net, setup.calib_runner, calib, weight_bits=(), quality_weight_bits=(),
                            act_bits=act_probe, max_calls=max_calls, progress=progress)
            sens.a_sqnr, sens.a_ssim = fresh.a_sqnr, fresh.a_ssim
    else:
        # Probes as the allocator needs them: content weights 2/4/8, quality weights 4/8, activations 8
        # (and 4 for the activation table); SQNR over max_calls of the sampler's calls (first and last).
        sens = analyze(net, setup.calib_runner, calib, weight_bits=(2, 4, 8), quality_weight_bits=(4, 8),
                       act_bits=act_probe, max_calls=max_calls, progress=progress)
    log(f"{len(sens.group)}-layer sensitivity: {time.time() - t0:.0f} s "
        f"(BOS precomputable: {sens.bos_embedding is not None})")

    def evaluate(weight_bits: dict[str, int]) -> float:      # weights-only candidate vs FP samples (MixDQ)
        cfg = make_config(sens, weight_bits, {}, budget=0, act_budget=16, bos_aware=False, method="probe")
        return float((setup.calib_runner(quantize_network(net, cfg)) - calib.fp_output).pow(2).mean())

    def act_evaluate(weight_bits: dict[str, int], act_bits: dict[str, int]) -> float:   # acts after weights
        cfg = make_config(sens, weight_bits, act_bits, budget=0, act_budget=0, bos_aware=True, method="probe")
        return float((setup.calib_runner(quantize_network(net, cfg)) - calib.fp_output).pow(2).mean())

    from fewstep.bench.mlcm.table import reference_stats

    fp_images = setup.eval_images(net)
    fp_ref = reference_stats(setup.judge.features(fp_images.permute(0, 2, 3, 1)))
    rows = [{"config": "full precision (fp32)", "mean_weight_bits": 32.0, "mean_act_bits": 32.0, "keep_fp": 0,
             **_metrics(setup, fp_images, fp_images, fp_ref)}]
    allocations = {}
    configs = act_configurations(sens, evaluate, act_evaluate) if acts else configurations(sens, evaluate)
    log(f"allocations done: {time.time() - t0:.0f} s")
    for name, cfg in configs.items():
        images = setup.eval_images(quantize_network(net, cfg))
        rows.append({"config": name, "mean_weight_bits": cfg["mean_weight_bits"],
                     "mean_act_bits": mean_act_bits(cfg["act_bits"], sens) if cfg["act_bits"] else 16.0,
                     "mean_act_bits_with_fp": mean_act_bits(cfg["act_bits"], sens, include_fp=True)
                     if cfg["act_bits"] else 16.0, "keep_fp": len(cfg["keep_fp"]),
                     **_metrics(setup, images, fp_images, fp_ref)})
        allocations[name] = allocation_summary(cfg, sens)
        log(f"{name}: {rows[-1]} {allocations[name]}  ({time.time() - t0:.0f} s)")
    return {"model": f"{STUDENT} student, {steps} steps", "n_eval": n, "n_calib": n_calib, "rows": rows,
            "allocations": allocations, "sensitivity": _sensitivity_digest(sens), "reused_sensitivity": reuse,
            "student_sha256": setup.student_sha256}


def sensitivity_from_json(path: str, calib: Any, expect_sha256: str | None = None) -> Sensitivity:
    """The Sensitivity of an earlier run: its per-layer digest (group, size, probe scores) plus the
    ranges and sizes of ``calib`` (a calibration on the same prompts and noise gives the same ranges).
    Digests written before activation SSIM was recorded (no ``a_ssim``) load with SQNR alone; with
    ``expect_sha256`` a digest of another student is refused."""
    import json

    data = json.loads(open(path).read())
    if expect_sha256 and data.get("student_sha256") not in (None, expect_sha256):
        raise ValueError(f"{path} probed another student (sha256 {data['student_sha256'][:16]}...)")
    digest = data["sensitivity"]
    sens = Sensitivity(bos_embedding=calib.bos_embedding())
    for name, d in digest.items():
        sens.group[name], sens.w_size[name] = d["group"], int(d["w_size"])
        sens.a_size[name] = calib.act_numel.get(name, 0)
        sens.absmax[name] = calib.absmax.get(name, 0.0)
        if name in calib.absmax_no_bos:
            sens.absmax_no_bos[name] = calib.absmax_no_bos[name]
        for key in ("w_sqnr", "w_ssim", "a_sqnr", "a_ssim"):
            if d.get(key):
                getattr(sens, key)[name] = {int(b): float(v) for b, v in d[key].items()}
    return sens


def _sensitivity_digest(sens: Sensitivity) -> dict[str, Any]:
    """Per layer: group, size and the probe scores (for reading the allocation afterwards)."""
    return {n: {"group": g, "w_size": sens.w_size[n], "w_sqnr": sens.w_sqnr.get(n), "w_ssim": sens.w_ssim.get(n),
                "a_sqnr": sens.a_sqnr.get(n), "a_ssim": sens.a_ssim.get(n)} for n, g in sens.group.items()}


def quality_table(rows: list[dict]) -> str:
    """Markdown table of :func:`run_quality` rows (mean A bits over the quantized activations; rows of
    older JSON without it show a dash)."""
    lines = ["| config | mean W bits | mean A bits | act layers kept 16-bit | FD-EffNet to renders | FD-EffNet to FP | "
             "attribute acc. | SSIM vs FP | PSNR vs FP dB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a_bits = f"{r['mean_act_bits']:.2f}" if "mean_act_bits" in r else "-"
        lines.append(f"| {r['config']} | {r['mean_weight_bits']:.2f} | {a_bits} | {r['keep_fp']} | "
                     f"{r['fd_effnet_real']:.2f} | {r['fd_effnet_vs_fp']:.2f} | {r['attribute_accuracy']:.3f} | "
                     f"{r['ssim_vs_fp']:.3f} | {r['psnr_vs_fp']:.2f} |")
    return "\n".join(lines)
