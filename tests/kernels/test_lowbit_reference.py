"""CPU tests of the low-bit reference numerics and the int4 packing (fewstep/kernels/reference.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fewstep.kernels import reference as ref


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_round_trip_error_is_at_most_half_a_step(bits):
    torch.manual_seed(0)
    w = torch.randn(7, 13) * torch.linspace(0.1, 3, 7)[:, None]       # channels of different ranges
    q, scale = ref.quantize_weight(w, bits)
    assert q.dtype == torch.int8 and int(q.abs().max()) == ref.qmax_of(bits)   # min-max: the extreme hits qmax
    err = (q.float() * scale[:, None] - w).abs()
    assert (err <= scale[:, None] / 2 + 1e-6).all()                   # round-to-nearest: <= half a step


def test_rounding_is_half_away_from_zero():
    v = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 0.49])
    assert ref.round_half_away(v).tolist() == [1.0, 2.0, 3.0, -1.0, -2.0, 0.0]


def test_activation_codes_clamp_to_symmetric_range():
    x = torch.tensor([-10.0, -1.0, 0.0, 1.0, 10.0])
    q = ref.quantize_act(x, torch.tensor(1.0 / 127), 8)
    assert q.tolist() == [-127, -127, 0, 127, 127]


@pytest.mark.parametrize("k", [1, 2, 9, 16])
def test_int4_pack_unpack_round_trip(k):
    q = torch.randint(-8, 8, (5, k), dtype=torch.int8)
    packed = ref.pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (5, (k + 1) // 2)
    assert torch.equal(ref.unpack_int4(packed, k), q)


def test_int4_halves_layout():
    q = torch.tensor([[1, -1, 7, -8]], dtype=torch.int8)               # K=4, Kh=2
    # byte j holds code j (low nibble) and code j+2 (high nibble), two's complement
    assert ref.pack_int4(q).tolist() == [[0x71, 0x8F]]


def test_pack_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        ref.pack_int4(torch.tensor([[9]], dtype=torch.int8))


@pytest.mark.parametrize("w_bits", [4, 8])
@pytest.mark.parametrize("a_bits", [8, 16])
def test_reference_linear_equals_dequantized_float_math(w_bits, a_bits):
    torch.manual_seed(1)
    x, w, b = torch.randn(3, 5, 11), torch.randn(6, 11), torch.randn(6)
    q, s = ref.quantize_weight(w, w_bits)
    stored = ref.pack_int4(q) if w_bits == 4 else q
    a_scale = torch.tensor(float(x.abs().max()) / 127) if a_bits == 8 else None
    y = ref.reference_lowbit_linear(x, stored, s, b, a_scale, a_bits, 11)
    xq = ref.fake_quant(x, a_scale, 8) if a_scale is not None else x
    expected = F.linear(xq.double(), (q.double() * s.double()[:, None]), b.double()).float()
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)   # float32 output rounding only


@pytest.mark.parametrize("w_bits", [4, 8])
@pytest.mark.parametrize("stride,padding,k", [(1, 1, 3), (2, 1, 3), (1, 0, 1)])
def test_reference_conv_equals_dequantized_float_conv(w_bits, stride, padding, k):
    torch.manual_seed(2)
    x, w, b = torch.randn(2, 5, 7, 6), torch.randn(4, 5, k, k), torch.randn(4)
    q, s = ref.quantize_weight(ref.conv_weight_to_rows(w), w_bits)
    stored = ref.pack_conv_int4(q, k * k) if w_bits == 4 else q
    a_scale = torch.tensor(float(x.abs().max()) / 127)
    y = ref.reference_lowbit_conv2d(x, stored, s, b, a_scale, 8, (4, 5, k, k), (stride, stride), (padding, padding))
    wq = (q.double() * s.double()[:, None]).view(4, k, k, 5).permute(0, 3, 1, 2)
    expected = F.conv2d(ref.fake_quant(x, a_scale, 8).double(), wq, b.double(), stride=stride, padding=padding)
    torch.testing.assert_close(y, expected.float(), rtol=1e-5, atol=1e-5)
    # and it approximates the float conv (8-bit activations, 4/8-bit weights)
    rel = (y - F.conv2d(x, w, b, stride=stride, padding=padding)).norm() / y.norm()
    assert rel < (0.25 if w_bits == 4 else 0.03)


def test_reference_linear_rejects_wrong_width():
    from fewstep.kernels.lowbit import lowbit_linear

    q, s = ref.quantize_weight(torch.randn(3, 4), 8)
    with pytest.raises(ValueError, match="expects 4"):
        lowbit_linear(torch.randn(2, 5), q, s, None, None, 16, 4)
