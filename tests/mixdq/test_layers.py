"""Quantized layers, BOS handling and save/load (CPU reference path)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_runner, text_states, tiny_unet
from torch import nn

from fewstep.kernels import reference as ref
from fewstep.nodes.mixdq.calibrate import calibrate
from fewstep.nodes.mixdq.layers import BOSAwareKV, QuantConv2d, QuantLinear, weight_bytes
from fewstep.nodes.mixdq.quantize import load_quantized, quantize_network, save_quantized
from fewstep.nodes.mixdq.sensitivity import sqnr_db


@pytest.mark.parametrize("w_bits", [4, 8])
def test_quant_linear_equals_fake_quant_math(w_bits):
    torch.manual_seed(0)
    lin = nn.Linear(13, 6)
    x = torch.randn(2, 5, 13)
    absmax = float(x.abs().max())
    q = QuantLinear.from_float(lin, w_bits, 8, absmax)
    assert q.qweight.dtype == (torch.uint8 if w_bits == 4 else torch.int8)
    expected = nn.functional.linear(ref.fake_quant(x, absmax / 127, 8), ref.fake_quant_weight(lin.weight, w_bits),
                                    lin.bias)
    torch.testing.assert_close(q(x), expected, rtol=1e-5, atol=1e-5)   # float32 summation order only


def test_quant_conv_equals_fake_quant_math():
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, stride=2, padding=1)
    x = torch.randn(2, 5, 9, 9)
    q = QuantConv2d.from_float(conv, 4, 8, float(x.abs().max()))
    w = ref.conv_weight_to_rows(conv.weight)
    wq = ref.fake_quant_weight(w, 4).view(7, 3, 3, 5).permute(0, 3, 1, 2)
    expected = nn.functional.conv2d(ref.fake_quant(x, float(x.abs().max()) / 127, 8), wq, conv.bias,
                                    stride=2, padding=1)
    torch.testing.assert_close(q(x), expected, rtol=1e-5, atol=1e-5)


def test_w4_storage_is_half_of_w8_and_a_quarter_of_fp32_plus_scales():
    lin = nn.Linear(64, 32)
    q8, q4 = QuantLinear.from_float(lin, 8, 8, 1.0), QuantLinear.from_float(lin, 4, 8, 1.0)
    assert q8.qweight.numel() * q8.qweight.element_size() == 64 * 32
    assert q4.qweight.numel() * q4.qweight.element_size() == 64 * 32 // 2
    assert weight_bytes(lin) > 3.5 * weight_bytes(q8) / 1 - 64 * 32 * 0  # fp32 weight is 4x the int8 codes
    assert weight_bytes(q4) < weight_bytes(q8)


def test_bos_precomputed_head_is_full_precision_and_rest_is_quantized():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    x = torch.randn(3, 5, 8)
    bos = torch.randn(8) * 50
    x[:, 0] = bos
    inner = QuantLinear.from_float(lin, 8, 8, float(x[:, 1:].abs().max()))
    layer = BOSAwareKV(inner, lin(bos[None])[0].detach())
    y = layer(x)
    assert torch.equal(y[:, 0], lin(bos[None]).detach().expand(3, -1))       # exact FP K/V of token 0
    assert torch.equal(y[:, 1:], inner(x[:, 1:]))
    # runtime mode (first token varies): token 0 goes through the weight-only path
    layer_rt = BOSAwareKV(inner, None)
    assert torch.equal(layer_rt(x)[:, 0], inner.forward_fp_act(x[:, :1])[:, 0])


def test_bos_aware_quantization_beats_plain_on_an_outlier_token():
    net, cond = tiny_unet(), text_states(2, bos_outlier=200.0)
    runner = make_runner(cond)
    calib = calibrate(net, runner)
    bos = calib.bos_embedding()
    assert bos is not None and torch.allclose(bos, cond[0, 0])             # CLIP-like: constant token 0
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    assert calib.absmax[name] > 10 * calib.absmax_no_bos[name]              # the outlier sets the full range
    base = {"weight_bits": {name: 8}, "act_bits": {name: 4}}
    plain = quantize_network(net, {**base, "act_absmax": {name: calib.absmax[name]}})
    aware = quantize_network(net, {**base, "act_absmax": {name: calib.absmax_no_bos[name]},
                                   "bos_aware": True, "bos_embedding": bos.tolist()})
    assert isinstance(aware.get_submodule(name), BOSAwareKV)
    fp = calib.fp_output
    assert sqnr_db(fp, runner(aware)) > sqnr_db(fp, runner(plain)) + 10


def test_bos_runtime_mode_when_first_token_varies():
    cond = text_states(2)
    cond[1, 0] += 1.0                                                       # bidirectional encoder: varies
    calib = calibrate(tiny_unet(), make_runner(cond))
    assert calib.bos_embedding() is None


def test_quantize_does_not_touch_the_input_model_and_rejects_unknown_layers():
    net = tiny_unet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    quantize_network(net, {"weight_bits": {"conv_in": 4}, "act_bits": {}, "act_absmax": {}})
    assert isinstance(net.conv_in, nn.Conv2d)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="'nope' is not a quantizable layer"):
        quantize_network(net, {"weight_bits": {"nope": 8}, "act_bits": {}, "act_absmax": {}})
    with pytest.raises(ValueError, match="no calibrated range"):
        quantize_network(net, {"weight_bits": {"conv_in": 8}, "act_bits": {"conv_in": 8}, "act_absmax": {}})


def test_save_load_round_trip(tmp_path):
    net, cond = tiny_unet(), text_states(2)
    runner = make_runner(cond)
    calib = calibrate(net, runner)
    names = list(calib.absmax)
    config = {"weight_bits": {n: (4 if i % 2 else 8) for i, n in enumerate(names)},
              "act_bits": {n: (16 if i == 0 else 8) for i, n in enumerate(names)},
              "act_absmax": {n: calib.absmax_no_bos.get(n, calib.absmax[n]) for n in names},
              "bos_aware": True, "bos_embedding": calib.bos_embedding().tolist()}
    q = quantize_network(net, config)
    path = save_quantized(q, config, tmp_path / "q.safetensors")
    assert path.with_suffix(".json").is_file()
    loaded, cfg = load_quantized(tiny_unet(seed=5), path)          # different base weights: all come from file
    assert cfg == config
    assert torch.equal(runner(loaded), runner(q))
    from safetensors.torch import load_file
    state = load_file(str(path))
    assert state["conv_in.qweight"].dtype == torch.int8 and state["conv_in.w_scale"].dtype == torch.float32
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save_quantized(q, config, tmp_path / "q.bin")
