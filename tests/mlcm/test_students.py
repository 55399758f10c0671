"""The shipped-student format: LoRA (+ overrides) on the built-in teacher round-trips to a plain UNet."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")


def test_shipped_student_loads_lean_and_diffusers_alike():
    """The lean (pure-torch, CPU default) and diffusers builds of a shipped student give the same output."""
    from fewstep.nodes.core.train.builtin import load_student
    from fewstep.nodes.mlcm.students import shipped_students, weights_dir

    path = weights_dir() / "fewstep-mlcm-student.safetensors"
    assert path.name in shipped_students()
    lean = load_student(path, lean=True)
    full = load_student(path)
    assert type(lean).__name__ == "LeanUNet"
    torch.manual_seed(0)
    x, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 384)
    t = torch.tensor([999, 250])
    with torch.no_grad():
        want = full(x, t, encoder_hidden_states=ctx).sample
        got = lean(x, t, encoder_hidden_states=ctx).sample
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
