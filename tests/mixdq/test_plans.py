"""GPU execution plans of the quantized layers: tuning once per shape, shared between identical layers,
never during graph capture; the precompile specs; the cost bench's tables. CPU tests patch the timing;
the ``gpu`` tests run the real kernels on a tiny UNet."""

from __future__ import annotations

import pytest
import torch
from helpers import make_runner, text_states, tiny_unet
from torch import nn

from fewstep.kernels import lowbit, precompile
from fewstep.kernels.lowbit import Plan
from fewstep.nodes.mixdq.calibrate import calibrate
from fewstep.nodes.mixdq.layers import QuantConv2d, QuantLinear, plan_report, quantizable_layers, set_tuning
from fewstep.nodes.mixdq.quantize import quantize_network


def _uniform(net: nn.Module, w_bits: int) -> dict:
    cond = text_states(2)
    calib = calibrate(net, make_runner(cond), keep_calls=False)
    names = list(quantizable_layers(net))
    return {"weight_bits": {n: w_bits for n in names}, "act_bits": {n: 8 for n in names},
            "act_absmax": dict(calib.absmax), "bos_aware": False}


@pytest.fixture
def fake_kernels(monkeypatch):
    """Kernels 'available' on CPU; tune() returns the last candidate and counts its calls."""
    calls = []

    def fake_tune(run, plans, reps=5):
        calls.append(plans)
        return plans[-1], {p.label(): float(i) for i, p in enumerate(plans)}

    monkeypatch.setattr(lowbit, "triton_available", lambda device: True)
    monkeypatch.setattr(lowbit, "tune", fake_tune)
    monkeypatch.setattr(lowbit, "time_ms", lambda fn, reps=5, warmup=2: 9.0)
    return calls


def test_plan_is_tuned_once_per_shape_and_shared_by_identical_layers(fake_kernels):
    a = QuantLinear.from_float(nn.Linear(32, 48), 8, 8, 1.0)
    b = QuantLinear.from_float(nn.Linear(32, 48), 8, 8, 1.0)
    root = nn.ModuleList([a, b])
    for layer in root:
        layer.backend = "triton"
    set_tuning(root, True)
    x = torch.randn(300, 32)
    plan_a = a._plan(x, 300, linear=True)
    assert a._plan(x, 300, linear=True) == plan_a and b._plan(x, 300, linear=True) == plan_a
    assert len(fake_kernels) == 1                                  # one timing run for both layers
    assert plan_a == fake_kernels[0][-1] and plan_a.impl == "int_mm"   # int_mm is a candidate of a W8A8 linear
    report = plan_report(root)
    assert [r["fp16_ms"] for r in report] == [9.0, 9.0] and report[0]["plan"] == "int_mm"
    a._plan(torch.randn(20, 32), 20, linear=True)                  # a new row count is a new shape
    assert len(fake_kernels) == 2


def test_no_tuning_without_the_flag_or_on_the_reference_backend(fake_kernels):
    conv = QuantConv2d.from_float(nn.Conv2d(8, 16, 3, padding=1), 8, 8, 1.0)
    conv.backend = "triton"
    x = torch.randn(1, 8, 6, 6)
    assert conv._plan(x, 36, linear=False) is None                 # tune off: the launcher's default plan
    set_tuning(conv, True)
    conv.backend = "reference"
    assert conv._plan(x, 36, linear=False) is None
    conv.backend = "triton"
    plan = conv._plan(x, 36, linear=False)
    assert plan is not None and plan.impl in ("split", "fused")    # no int_mm for a 3x3 conv
    assert len(fake_kernels) == 1


def test_candidates_cover_the_impls_and_respect_cublaslt_limits():
    big = lowbit.candidates(4096, 320, 320, a8=True, w4=False, linear=True)
    assert {p.impl for p in big} == {"split", "fused", "int_mm"}
    assert "int_mm" not in {p.impl for p in lowbit.candidates(8, 320, 320, a8=True, w4=False, linear=True)}
    assert "int_mm" not in {p.impl for p in lowbit.candidates(4096, 320, 320, a8=True, w4=True, linear=True)}
    assert "int_mm" not in {p.impl for p in lowbit.candidates(4096, 4, 320, a8=True, w4=False, linear=True)}
    assert {p.impl for p in lowbit.candidates(4096, 320, 320, a8=False, w4=False, linear=True)} == {"a16"}


def test_precompile_specs_are_one_per_specialization_class():
    q = quantize_network(tiny_unet(), _uniform(tiny_unet(), 8))
    specs = precompile.network_specs(q)
    kinds = {(s.kind, s.kernel, s.stride) for s in specs}
    assert ("linear", (1, 1), (1, 1)) in kinds and ("conv", (3, 3), (1, 1)) in kinds
    assert ("conv", (3, 3), (2, 2)) in kinds                       # the downsampler
    assert len(specs) == len({precompile.spec_class(s) for s in specs})
    assert len(specs) < len(quantizable_layers(tiny_unet()))      # identical layer kinds collapse
    jobs = precompile.jobs_for(specs, [4096, 32])
    assert jobs and all(p.impl != "int_mm" for _, p in jobs)      # cuBLAS needs no compile


@pytest.mark.gpu
def test_tuned_unet_on_the_gpu_matches_the_reference_and_replays_in_a_graph():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from fewstep.nodes.mixdq.layers import set_backend

    net = tiny_unet()
    # .half() after quantizing turns the float32 scales into fp16 too: the layers must still run
    # (the kernels read float32 scales; this call failed every plan in the first H200 run).
    q = quantize_network(net, _uniform(net, 8)).cuda().half()
    set_tuning(q, True)
    x = torch.randn(2, 4, 8, 8, device="cuda", dtype=torch.half).contiguous(memory_format=torch.channels_last)
    t = torch.full((2,), 500.0, device="cuda")
    ehs = text_states(2).cuda().half()
    with torch.no_grad():
        y = q(x, t, encoder_hidden_states=ehs).sample
        report = plan_report(q)
        assert report and all(r["ms"] is not None and r["fp16_ms"] > 0 for r in report)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            q(x, t, encoder_hidden_states=ehs)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y_graph = q(x, t, encoder_hidden_states=ehs).sample
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y_graph, y)                              # the tuned plans run inside the graph
        set_backend(q, "reference")
        y_ref = q(x, t, encoder_hidden_states=ehs).sample           # same codes, float32 sums per layer
        y_fp = net.cuda()(x.float(), t, encoder_hidden_states=ehs.float()).sample
    # fp16 activations between layers on both sides; summation order differs, and a code can flip
    # where an upstream difference crosses a rounding boundary: 1 % of the output norm.
    assert float((y.float() - y_ref.float()).norm() / y_ref.float().norm()) < 1e-2
    # Against the float UNet the kernels may lose no more than the quantization itself does (the reference
    # path): this tiny random net with a BOS outlier and no BOS handling loses 0.21 on the CPU in float32 and
    # 0.27 on an H200 (2026-11-30) — the earlier fixed bound of 0.2 was a guess that the quantizer misses.
    err_kernel = float((y.float() - y_fp).norm() / y_fp.norm())
    err_reference = float((y_ref.float() - y_fp).norm() / y_fp.norm())
    assert err_kernel <= 1.05 * err_reference + 1e-2
    assert err_reference < 0.5                                      # still an image of the float UNet's output


@pytest.mark.gpu
def test_precompile_warms_the_kernels_in_worker_processes():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    spec = precompile.KernelSpec("linear", 48, 32)
    stats = precompile.warm([(spec, Plan("fused", 16, 64, 64, 4, 3)), (spec, Plan("split", 16, 64, 128, 4, 3))], 2)
    assert stats["kernels"] == 2 and stats["compiled"] == 2 and stats["failed"] == 0
