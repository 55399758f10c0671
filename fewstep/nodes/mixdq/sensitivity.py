"""Metric-decoupled layer sensitivity (MixDQ Sec. 4.2).

Each layer is quantized *alone* (its weights at b bits, or its input activations at b bits) and the
network's damage is measured two ways:

* SQNR of the network output over every recorded sampler call,
  ``10 log10(||y||^2 / ||y - y_q||^2)`` in dB (MixDQ's quality metric; higher is better);
* for content-related layers (cross-attention, FFN), SSIM of the final samples against the
  full-precision samples (Wang et al. 2004, Gaussian window sigma 1.5; higher is better).

Weights and activations get the same decoupled treatment (MixDQ probes both at each width): weights at
``weight_bits`` (2/4/8), activations at ``act_bits`` (4/8 by default: the choices of mixed-precision
activations; 8 alone is enough for uniform A8 with the most sensitive layers kept 16-bit).

The result is a :class:`Sensitivity` table, which flattens into METRICS (``to_metrics``) and back.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fewstep.kernels import reference as ref
from fewstep.nodes.mixdq.calibrate import Calibration, Runner, main_tensor
from fewstep.nodes.mixdq.layers import is_bos_layer, is_content_layer, quantizable_layers

MAX_SQNR_DB = 120.0      # cap: a probe that changes nothing would give +inf


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB, capped at MAX_SQNR_DB."""
    signal = reference.double().pow(2).sum()
    noise = (reference.double() - test.double()).pow(2).sum()
    if noise <= signal * 10 ** (-MAX_SQNR_DB / 10):
        return MAX_SQNR_DB
    return float(10 * torch.log10(signal / noise))


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 7, sigma: float = 1.5) -> float:
    """Mean SSIM of two batches [B, C, H, W] (Wang et al. 2004, eq. 13), data range from ``a``.

    The Gaussian window shrinks to the image size for tiny images; constants K1=0.01, K2=0.03.
    """
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"ssim wants two [B, C, H, W] batches of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    a, b = a.double(), b.double()
    size = min(window, a.shape[-1], a.shape[-2])
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords**2 / (2 * sigma**2))
    g = (g / g.sum()).to(a.device)
    kernel = (g[:, None] * g[None, :]).expand(a.shape[1], 1, size, size)       # [C, 1, s, s]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=a.shape[1])

    data_range = float(a.max() - a.min()) or 1.0
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


@contextlib.contextmanager
def probe_weight(layer: nn.Module, bits: int) -> Iterator[None]:
    """Temporarily replace ``layer.weight`` by its per-channel fake-quantized value."""
    saved = layer.weight.data
    layer.weight.data = ref.fake_quant_weight(saved, bits)
    try:
        yield
    finally:
        layer.weight.data = saved


@contextlib.contextmanager
def probe_act(layer: nn.Module, absmax: float, bits: int, skip_first_token: bool) -> Iterator[None]:
    """Temporarily fake-quantize ``layer``'s input (per tensor); optionally leave text token 0 alone."""
    scale = max(absmax, 1e-8) / ref.qmax_of(bits)

    def hook(_m: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if skip_first_token and x.dim() == 3:
            return (torch.cat([x[:, :1], ref.fake_quant(x[:, 1:], scale, bits)], dim=1), *args[1:])
        return (ref.fake_quant(x, scale, bits), *args[1:])

    handle = layer.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class Sensitivity:
    """Per-layer probe results and sizes. Dicts are keyed by layer name, then by bits."""

    group: dict[str, str] = field(default_factory=dict)              # "content" | "quality"
    w_size: dict[str, int] = field(default_factory=dict)             # weight elements
    a_size: dict[str, int] = field(default_factory=dict)             # input elements per sample
    absmax: dict[str, float] = field(default_factory=dict)           # calibrated input range
    absmax_no_bos: dict[str, float] = field(default_factory=dict)    # ... without text token 0
    w_sqnr: dict[str, dict[int, float]] = field(default_factory=dict)
    w_ssim: dict[str, dict[int, float]] = field(default_factory=dict)
    a_sqnr: dict[str, dict[int, float]] = field(default_factory=dict)
    a_ssim: dict[str, dict[int, float]] = field(default_factory=dict)
    bos_embedding: torch.Tensor | None = None

    def layers(self) -> list[str]:
        return list(self.group)

    def to_metrics(self) -> dict[str, float | int | str]:
        """Flatten into METRICS keys like ``w_sqnr/4/<layer>``; see :meth:`from_metrics`."""
        out: dict[str, float | int | str] = {"mixdq/layers": len(self.group)}
        for name, grp in self.group.items():
            out[f"group/{name}"] = grp
        for key in ("w_size", "a_size", "absmax", "absmax_no_bos"):
            for name, value in getattr(self, key).items():
                out[f"{key}/{name}"] = value
        for key in ("w_sqnr", "w_ssim", "a_sqnr", "a_ssim"):
            for name, per_bits in getattr(self, key).items():
                for bits, value in per_bits.items():
                    out[f"{key}/{bits}/{name}"] = value
        if self.bos_embedding is not None:
            raw = self.bos_embedding.float().cpu().numpy().tobytes()
            out["bos/embedding_f32_b64"] = base64.b64encode(raw).decode("ascii")
        return out

    @classmethod
    def from_metrics(cls, metrics: dict[str, float | int | str]) -> Sensitivity:
        """Inverse of :meth:`to_metrics`; raises ValueError naming what is missing."""
        if "mixdq/layers" not in metrics:
            raise ValueError("METRICS do not come from MixDQCalibrate (no 'mixdq/layers' key)")
        sens = cls()
        for key, value in metrics.items():
            parts = key.split("/", 2)
            if parts[0] == "group":
                sens.group[key.split("/", 1)[1]] = str(value)
            elif parts[0] in ("w_size", "a_size"):
                getattr(sens, parts[0])[key.split("/", 1)[1]] = int(value)
            elif parts[0] in ("absmax", "absmax_no_bos"):
                getattr(sens, parts[0])[key.split("/", 1)[1]] = float(value)
            elif parts[0] in ("w_sqnr", "w_ssim", "a_sqnr", "a_ssim") and len(parts) == 3:
                getattr(sens, parts[0]).setdefault(parts[2], {})[int(parts[1])] = float(value)
        if "bos/embedding_f32_b64" in metrics:
            raw = base64.b64decode(str(metrics["bos/embedding_f32_b64"]))
            sens.bos_embedding = torch.frombuffer(bytearray(raw), dtype=torch.float32).clone()
        if len(sens.group) != int(metrics["mixdq/layers"]):
            raise ValueError(f"METRICS list {len(sens.group)} layer groups, header says {metrics['mixdq/layers']}")
        return sens


@torch.no_grad()
def _calls_sqnr(net: nn.Module, calib: Calibration, picks: list[int]) -> float:
    outs = [main_tensor(net(*calib.calls[i][0], **calib.calls[i][1])) for i in picks]
    ref_outs = [calib.call_outputs[i] for i in picks]
    return sqnr_db(torch.cat([o.flatten() for o in ref_outs]), torch.cat([o.flatten() for o in outs]))


def _pick_calls(n_calls: int, max_calls: int | None) -> list[int]:
    """Indices of the recorded calls to probe: all, or ``max_calls`` spread evenly (first and last kept)."""
    if max_calls is None or max_calls >= n_calls:
        return list(range(n_calls))
    return sorted({round(i * (n_calls - 1) / max(max_calls - 1, 1)) for i in range(max_calls)})


@torch.no_grad()
def _measure(net: nn.Module, runner: Runner, calib: Calibration, content: bool,
             picks: list[int]) -> tuple[float, float | None]:
    score_sqnr = _calls_sqnr(net, calib, picks)
    score_ssim = ssim(calib.fp_output, runner(net)) if content else None
    return score_sqnr, score_ssim


def analyze(net: nn.Module, runner: Runner, calib: Calibration, *, weight_bits: tuple[int, ...] = (2, 4, 8),
            act_bits: tuple[int, ...] = (4, 8), bos_aware: bool = True,
            quality_weight_bits: tuple[int, ...] | None = None, max_calls: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> Sensitivity:
    """Probe every quantizable layer alone at each bit width; see the module docstring.

    ``quality_weight_bits`` narrows the weight probes of quality layers (the allocator never gives them
    2 bits); ``max_calls`` probes SQNR on that many of the recorded calls (spread over the steps).
    """
    if any(not 2 <= b <= 8 for b in (*weight_bits, *act_bits, *(quality_weight_bits or ()))):
        raise ValueError(f"probe widths must be 2..8 bits, got weights {weight_bits}, activations {act_bits}")
    layers = quantizable_layers(net)
    sens = Sensitivity(bos_embedding=calib.bos_embedding() if bos_aware else None)
    picks = _pick_calls(len(calib.calls), max_calls)
    n_content = sum(is_content_layer(n) for n in layers)
    n_w = n_content * len(weight_bits) + (len(layers) - n_content) * len(quality_weight_bits or weight_bits)
    total, done = n_w + len(layers) * len(act_bits), 0
    for name, layer in layers.items():
        content = is_content_layer(name)
        w_bits = weight_bits if content or quality_weight_bits is None else quality_weight_bits
        sens.group[name] = "content" if content else "quality"
        sens.w_size[name] = layer.weight.numel()
        sens.a_size[name] = calib.act_numel.get(name, 0)
        sens.absmax[name] = calib.absmax.get(name, 0.0)
        skip_bos = bos_aware and is_bos_layer(name) and name in calib.absmax_no_bos
        if skip_bos:
            sens.absmax_no_bos[name] = calib.absmax_no_bos[name]
        act_range = sens.absmax_no_bos[name] if skip_bos else sens.absmax[name]
        for bits in w_bits:
            with probe_weight(layer, bits):
                q, s = _measure(net, runner, calib, content, picks)
            sens.w_sqnr.setdefault(name, {})[bits] = q
            if s is not None:
                sens.w_ssim.setdefault(name, {})[bits] = s
            done += 1
            if progress:
                progress(done, total)
        for bits in act_bits:
            with probe_act(layer, act_range, bits, skip_bos):
                q, s = _measure(net, runner, calib, content, picks)
            sens.a_sqnr.setdefault(name, {})[bits] = q
            if s is not None:
                sens.a_ssim.setdefault(name, {})[bits] = s
            done += 1
            if progress:
                progress(done, total)
    return sens
