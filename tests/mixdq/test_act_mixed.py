"""Mixed-precision activations (MixDQ {4, 8} bits under an average-bit budget): 4-bit numerics, the
allocation, backward compatibility with 8-bit-only sensitivities, the probes and the Allocate node."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from helpers import make_runner, text_states, tiny_unet
from torch import nn

from fewstep.kernels import lowbit
from fewstep.kernels import reference as ref
from fewstep.nodes.mixdq.allocate import allocate_acts, mean_act_bits, mixdq_config
from fewstep.nodes.mixdq.layers import QuantLinear
from fewstep.nodes.mixdq.sensitivity import Sensitivity

# x / s with s = 0.25 (exact in float32): 1.2 -> 1, -4 -> -4, 8 -> clamp 7, 0.5 -> 1 (half away from zero),
# -1.5 -> -2, 7 -> 7, -9.2 -> clamp -7 (the 4-bit grid is symmetric, -8 is never produced)
X = torch.tensor([0.3, -1.0, 2.0, 0.125, -0.375, 1.75, -2.3])
CODES_A4 = [1, -4, 7, 1, -2, 7, -7]


def test_4bit_activation_codes_match_a_hand_computation():
    q = ref.quantize_act(X, 0.25, 4)
    assert q.dtype == torch.int8 and q.tolist() == CODES_A4
    assert ref.fake_quant(X, 0.25, 4).tolist() == [0.25 * c for c in CODES_A4]


def test_quant_linear_with_4bit_activations_matches_a_hand_computation():
    lin = nn.Linear(7, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 0, 0.5], [0, 2.0, 0, 0, 0, -1.0, 0]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2]))
    q = QuantLinear.from_float(lin, 8, 4, absmax=1.75)                  # s_a = 1.75 / 7 = 0.25
    assert q.a_bits == 4 and float(q.a_scale) == 0.25
    # weight codes: row 0 [127, 0, ..., 64] with s_w = 1/127 (64 = round(0.5 * 127)); row 1 s_w = 2/127
    want0 = 0.25 * (1 / 127) * (127 * 1 + 64 * -7) + 0.1
    want1 = 0.25 * (2 / 127) * (127 * -4 + -64 * 7) - 0.2
    y = q(X[None])[0]
    assert y.tolist() == pytest.approx([want0, want1], rel=1e-6)


def _kernel_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return torch.device("cpu")
    pytest.skip("needs CUDA or TRITON_INTERPRET=1")


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["split", "fused", "int_mm"])
def test_gpu_plans_use_the_4bit_grid(impl):
    """Every A-quantizing plan clamps to the 4-bit grid (codes in int8 storage, scale absmax / 7): the
    layer output equals the reference at 4 bits, and differs from what 8-bit codes would give."""
    dev = _kernel_device()
    if impl == "int_mm" and dev.type != "cuda":
        pytest.skip("cuBLASLt int8 GEMM is CUDA only")
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 64, generator=g) * 3).to(dev)
    qw, s_w = ref.quantize_weight(torch.randn(32, 64, generator=g).to(dev), 8)
    a_scale = torch.tensor(float(x.abs().max()) * 0.5 / 7, device=dev)   # half range: the clamp matters
    plan = lowbit.Plan(impl, 16, 32, 64 if impl == "fused" else 128, 4, 2)
    y = lowbit.lowbit_linear(x, qw, s_w, None, a_scale, 4, 64, backend="triton", plan=plan)
    want = ref.reference_lowbit_linear(x, qw, s_w, None, a_scale, 4, 64, exact=True)
    wrong = ref.reference_lowbit_linear(x, qw, s_w, None, a_scale, 8, 64, exact=True)
    err = float((y.double() - want.double()).abs().max())
    assert err <= 2**-14 * float(want.abs().max())
    assert float((wrong.double() - want.double()).abs().max()) > 100 * max(err, 1e-6)


def _sens(n: int = 10) -> Sensitivity:
    """n quality layers of equal input size; layer i's 4-bit activation SQNR is 10 + 3 i dB (layer 0 the
    most sensitive), 8-bit SQNR 60 dB everywhere; the first two are content layers with SSIM probes."""
    s = Sensitivity()
    for i in range(n):
        name = f"l{i}"
        s.group[name] = "content" if i < 2 else "quality"
        s.w_size[name], s.a_size[name], s.absmax[name] = 100, 50, 1.0
        s.w_sqnr[name] = {4: 20.0, 8: 40.0}
        s.a_sqnr[name] = {4: 10.0 + 3 * i, 8: 60.0 - 0.1 * i}
        if i < 2:
            s.w_ssim[name] = {4: 0.9, 8: 0.99}
            s.a_ssim[name] = {4: 0.5 + 0.4 * i, 8: 0.999}
    return s


def test_4_8_allocation_meets_the_budget_and_keeps_the_sensitive_layers_at_8_bits():
    s = _sens()
    quality = [f"l{i}" for i in range(2, 10)]
    alloc, keep = allocate_acts(s, 6.0, keep_fp_frac=0.0, bits=(4, 8))
    assert keep == [] and set(alloc.values()) == {4, 8}
    assert mean_act_bits(alloc, s) <= 6.0 + 1e-9
    assert mean_act_bits(alloc, s) == pytest.approx(6.0)               # the spare budget is spent
    eights = [n for n in quality if alloc[n] == 8]
    assert eights == quality[: len(eights)] and len(eights) >= 1      # the lowest 4-bit SQNRs get 8 bits
    assert alloc["l0"] == 8 and alloc["l1"] == 4                        # content layers by SSIM: 0.5 vs 0.9


def test_mixed_config_keeps_the_top_fraction_16_bit_and_the_budget_on_the_rest():
    s = _sens()
    cfg = mixdq_config(s, 8.0, 7.0, keep_fp_frac=0.1, act_bits=(4, 8))
    assert cfg["keep_fp"] == ["l9"]                                     # lowest 8-bit SQNR
    assert cfg["act_bits"]["l9"] == 16 and cfg["mean_act_bits"] <= 7.0 + 1e-9
    assert 4 in cfg["act_bits"].values() and 8 in cfg["act_bits"].values()
    without = mixdq_config(s, 8.0, 7.0, keep_fp_frac=0.0, act_bits=(4, 8))
    assert without["keep_fp"] == [] and 16 not in without["act_bits"].values()


def _old_metrics() -> dict:
    """METRICS of a calibration that probed activations at 8 bits only (the earlier default)."""
    s = _sens(4)
    s.a_sqnr = {n: {8: v[8]} for n, v in s.a_sqnr.items()}
    s.a_ssim = {n: {8: v[8]} for n, v in s.a_ssim.items()}
    return s.to_metrics()


def test_an_8bit_only_sensitivity_still_allocates_and_asks_for_4bit_probes_when_mixed():
    s = Sensitivity.from_metrics(_old_metrics())
    assert all(set(v) == {8} for v in s.a_sqnr.values())
    cfg = mixdq_config(s, 8.0, 8.0)
    assert sorted(set(cfg["act_bits"].values())) == [8, 16] and cfg["mean_act_bits"] == 8.0
    with pytest.raises(ValueError, match="act_probe_bits"):
        mixdq_config(s, 8.0, 7.7, act_bits=(4, 8))


def test_activation_split_scan_keeps_the_candidate_the_evaluator_prefers():
    s = _sens()
    seen = []

    def evaluate(acts: dict[str, int]) -> float:
        seen.append(dict(acts))
        return -sum(acts[n] for n in ("l0", "l1"))                      # prefer wide content activations

    alloc, _ = allocate_acts(s, 6.0, keep_fp_frac=0.0, bits=(4, 8), evaluate=evaluate)
    candidates = list(seen)
    assert len(candidates) > 1 and alloc == min(candidates, key=evaluate)
    assert mean_act_bits(alloc, s) <= 6.0 + 1e-9


def test_probes_store_4_and_8_bit_activation_scores():
    from fewstep.nodes.mixdq.calibrate import calibrate
    from fewstep.nodes.mixdq.sensitivity import analyze

    net, runner = tiny_unet(), make_runner(text_states(2), steps=1)
    sens = analyze(net, runner, calibrate(net, runner), weight_bits=(), act_bits=(4, 8), max_calls=1)
    assert all(set(v) == {4, 8} for v in sens.a_sqnr.values()) and sens.a_ssim
    assert all(set(sens.a_ssim[n]) == {4, 8} for n, g in sens.group.items() if g == "content")
    worse = [sens.a_sqnr[n][4] < sens.a_sqnr[n][8] for n in sens.layers()]
    assert np.mean(worse) > 0.9                                         # fewer bits, more noise
    back = Sensitivity.from_metrics(sens.to_metrics())
    assert back.a_sqnr == sens.a_sqnr and back.a_ssim == sens.a_ssim
    with pytest.raises(ValueError, match="2..8"):
        analyze(net, runner, calibrate(net, runner), weight_bits=(), act_bits=(16,))


def test_allocate_node_act_choices_widget():
    from fewstep.nodes.mixdq.nodes import MixDQAllocate

    metrics = _sens().to_metrics()
    widgets = {w.name: w for w in MixDQAllocate.define_schema().inputs}
    assert widgets["act_choices"].default == "" and widgets["act_choices"].optional
    assert widgets["act_budget"].default == 7.7 and widgets["act_budget"].optional
    base = dict(sensitivity=metrics, method="mixdq", weight_bits=8.0, act_bits=8, keep_fp_percent=10.0,
                bos_aware=False, decoupled=True, save_name="")
    old = MixDQAllocate.execute(**base).values[0]                         # a graph saved before the widgets
    assert sorted(set(old["act_bits"].values())) == [8, 16]
    mixed = MixDQAllocate.execute(**base, act_choices="4,8", act_budget=6.0).values[0]
    assert sorted(set(mixed["act_bits"].values())) == [4, 8, 16] and mixed["mean_act_bits"] <= 6.0 + 1e-9
    a4 = MixDQAllocate.execute(**{**base, "act_bits": 4}).values[0]       # one width: every other layer at it
    assert sorted(set(a4["act_bits"].values())) == [4, 16]
    with pytest.raises(ValueError, match="act_choices"):
        MixDQAllocate.execute(**base, act_choices="4,x")
