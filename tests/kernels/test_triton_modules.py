"""The lazy loader of the Triton kernel modules: a module that cannot import gives None (the ops then run
their references), and a loaded one launches on the CPU only under Triton's interpreter."""

from __future__ import annotations

import pytest
import torch

from fewstep.kernels import geglu, triton_modules


def test_a_module_that_cannot_import_is_none_and_never_runs():
    assert triton_modules.load("no_such_kernels_module") is None
    assert not triton_modules.runs_on("no_such_kernels_module", torch.device("cuda"))


def test_cpu_launches_need_the_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert triton_modules.load("geglu_triton") is not None
    assert not triton_modules.runs_on("geglu_triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_modules.runs_on("geglu_triton", torch.device("cpu"))


def test_ops_fall_back_to_their_reference_without_the_kernel_module(monkeypatch):
    """With no kernel module, ``backend="auto"`` still computes (PyTorch's ops) and "triton" says why not."""
    monkeypatch.setattr(geglu, "_triton_module", lambda: None)
    h = torch.randn(3, 8)
    a, g = h.chunk(2, dim=-1)
    assert torch.equal(geglu.geglu(h), a * torch.nn.functional.gelu(g))
    with pytest.raises(RuntimeError, match="not importable"):
        geglu.geglu(h, backend="triton")
