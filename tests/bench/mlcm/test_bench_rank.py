"""LoRA rank truncation (nodes.mlcm.rank): the best rank-r approximation of B·A, in peft's layout."""

from __future__ import annotations

import pytest
import torch

from fewstep.bench.mlcm.rank import truncate_lora, truncate_pair


def test_truncation_is_exact_when_delta_has_lower_rank():
    torch.manual_seed(0)
    # ΔW of rank 3 written as a rank-8 conv pair (A [8, 5, 3, 3], B [6, 8, 1, 1]): rank 4 must keep it exactly
    a = torch.randn(8, 5, 3, 3)
    b = torch.randn(6, 3) @ torch.randn(3, 8)
    b = b.reshape(6, 8, 1, 1)
    a2, b2 = truncate_pair(a, b, 4)
    assert a2.shape == (4, 5, 3, 3) and b2.shape == (6, 4, 1, 1)
    torch.testing.assert_close(b2.flatten(1) @ a2.flatten(1), b.flatten(1) @ a.flatten(1), atol=1e-4, rtol=1e-4)


def test_truncation_error_is_the_dropped_singular_values():
    torch.manual_seed(1)
    a, b = torch.randn(8, 7), torch.randn(9, 8)          # linear layout, generic rank 7
    delta = (b @ a).double()
    s = torch.linalg.svdvals(delta)
    a2, b2 = truncate_pair(a, b, 3)
    err = torch.linalg.matrix_norm(delta - (b2 @ a2).double())
    # Eckart–Young: the best rank-3 error is the norm of the dropped singular values; no rank-3 pair does better
    assert float(err) == pytest.approx(float(s[3:].pow(2).sum().sqrt()), rel=1e-4)
    naive = torch.linalg.matrix_norm(delta - (b[:, :3] @ a[:3]).double())
    assert err < naive


def test_truncate_lora_keeps_other_tensors_and_rejects_unpaired():
    a, b = torch.randn(4, 3), torch.randn(5, 4)
    bias = torch.randn(5)
    out = truncate_lora({"x.lora_A.default.weight": a, "x.lora_B.default.weight": b, "override.bias": bias}, 2)
    assert out["x.lora_A.default.weight"].shape == (2, 3) and out["x.lora_B.default.weight"].shape == (5, 2)
    assert torch.equal(out["override.bias"], bias)
    with pytest.raises(ValueError, match="lora_B"):
        truncate_lora({"x.lora_A.default.weight": a}, 2)
