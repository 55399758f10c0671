"""The lean block forwards of the fast path (fewstep/nodes/core/unet_lean.py).

On the CPU they must be bit-identical to diffusers (same ops); the CUDA path's bias folding is checked on
the CPU by forcing it (with PyTorch ops standing in for the residual kernel) against diffusers within
float32 rounding, and on the GPU (marked) against fp32 eager within fp16 tolerance.
"""

from __future__ import annotations

import copy

import pytest
import torch

from fewstep.bench.core.sampling import TINY_UNET
from fewstep.nodes.core import unet_lean
from fewstep.nodes.core.vae_fast import fuse_groupnorms


def _unets(linear_projection: bool = False) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, int]]:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    plain = UNet2DConditionModel(**TINY_UNET, use_linear_projection=linear_projection).eval()
    with torch.no_grad():                           # non-zero biases everywhere: folding them must matter
        for m in plain.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.5)
    lean = copy.deepcopy(plain)
    fuse_groupnorms(lean)
    counts = unet_lean.lean_forwards(lean)
    return plain, lean, counts


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10.0, 700.0]), torch.randn(2, 5, 32, generator=g)


@pytest.mark.parametrize("linear_projection", [False, True])
def test_lean_forwards_are_bit_identical_on_cpu(linear_projection):
    plain, lean, counts = _unets(linear_projection)
    # TINY_UNET: 2 + 3 resnets down/up + 2 mid... every block of each kind is rebound
    from diffusers.models.activations import GEGLU
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D
    expected = {"resnet": ResnetBlock2D, "geglu": GEGLU, "transformer": BasicTransformerBlock}
    for kind, cls in expected.items():
        assert counts[kind] == sum(type(m) is cls for m in lean.modules()) > 0
    x, t, c = _inputs()
    with torch.no_grad():
        assert torch.equal(plain(x, t, c).sample, lean(x, t, c).sample)


def test_lean_transformer_blocks_use_the_fused_add_layer_norm(monkeypatch):
    calls = []
    real = unet_lean.add_layer_norm
    monkeypatch.setattr(unet_lean, "add_layer_norm", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    _, lean, counts = _unets()
    x, t, c = _inputs()
    with torch.no_grad():
        lean(x, t, c)
    assert len(calls) == 2 * counts["transformer"]           # after self-attention and after cross-attention


def test_folded_biases_equal_diffusers(monkeypatch):
    """The CUDA path (conv1's bias moved into GN2's ``pre``, conv2's added with the shortcut, 1x1 convs as
    GEMMs over NHWC pixels), forced on the CPU: equal to diffusers up to float32 reordering."""
    plain, lean, _ = _unets()
    lean.to(memory_format=torch.channels_last)
    monkeypatch.setattr(unet_lean, "_on_kernels", lambda x: not torch.is_grad_enabled())
    monkeypatch.setattr(unet_lean.residual, "supported", lambda h, r: False)   # PyTorch ops for the kernel
    seen = []
    monkeypatch.setattr(unet_lean, "_resnet_folded",
                        lambda *a, real=unet_lean._resnet_folded: seen.append(1) or real(*a))
    x, t, c = _inputs()
    with torch.no_grad():
        want = plain(x, t, c).sample
        got = lean(x.contiguous(memory_format=torch.channels_last), t, c).sample
    assert seen
    assert float((got - want).abs().max()) < 1e-4 * float(want.abs().max())
    lean_without = copy.deepcopy(plain)        # and the biases do matter: dropping conv2's would fail
    for m in lean_without.modules():
        if hasattr(m, "conv2") and m.conv2.bias is not None:
            m.conv2.bias.data.zero_()
    with torch.no_grad():
        assert float((lean_without(x, t, c).sample - want).abs().max()) > 1e-2


def test_swapped_convolutions_keep_their_own_forward(monkeypatch):
    """A convolution replaced after preparation (MixDQ swaps in quantized layers) is called as a module,
    not through the bias-folding path that reads ``weight``/``bias`` of an nn.Conv2d."""
    from diffusers.models.resnet import ResnetBlock2D

    class Swapped(torch.nn.Module):
        def __init__(self, conv: torch.nn.Conv2d) -> None:
            super().__init__()
            self.inner, self.calls = conv, 0

        def forward(self, x):
            self.calls += 1
            return self.inner(x)

    plain, lean, _ = _unets()
    block = next(m for m in lean.modules() if type(m) is ResnetBlock2D)
    block.conv1 = Swapped(block.conv1)
    monkeypatch.setattr(unet_lean, "_on_kernels", lambda x: not torch.is_grad_enabled())
    monkeypatch.setattr(unet_lean.residual, "supported", lambda h, r: False)   # the other blocks fold
    x, t, c = _inputs()
    with torch.no_grad():
        got, want = lean(x, t, c).sample, plain(x, t, c).sample
    assert block.conv1.calls == 1
    assert float((got - want).abs().max()) < 1e-4 * float(want.abs().max())


def test_lean_forwards_keep_gradients_on_the_diffusers_path():
    plain, lean, _ = _unets()
    x, t, c = _inputs()
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    plain(x1, t, c).sample.square().sum().backward()
    lean(x2, t, c).sample.square().sum().backward()
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_gpu_lean_forwards_match_fp32_eager():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from fewstep.kernels.groupnorm import for_graphs

    plain, lean, _ = _unets()
    plain.cuda()
    lean.half().cuda().to(memory_format=torch.channels_last)
    x, t, c = (v.cuda() for v in _inputs())
    with torch.no_grad(), for_graphs():
        want = plain(x, t, c).sample
        got = lean(x.half().contiguous(memory_format=torch.channels_last), t, c.half()).sample.float()
    assert float((got - want).norm() / want.norm()) < 1e-2


def test_blocks_with_extra_arguments_or_other_norms_keep_diffusers_forward(monkeypatch):
    """A call with cross-attention kwargs (adapters pass them) runs the class's own forward, and a
    block with another norm type is not rebound at all."""
    from diffusers.models.attention import BasicTransformerBlock

    calls = []
    real = unet_lean.add_layer_norm
    monkeypatch.setattr(unet_lean, "add_layer_norm", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, lean, _ = _unets()
    x, t, c = _inputs()
    with torch.no_grad():
        lean(x, t, c)
        assert calls                                   # plain call: the lean path
        calls.clear()
        block = next(m for m in lean.modules() if type(m) is BasicTransformerBlock)
        tokens = torch.randn(2, 4, block.norm1.normalized_shape[0])
        block(tokens, encoder_hidden_states=c, cross_attention_kwargs={"gligen": None, "extra": 1})
        assert not calls                               # extra kwargs: diffusers' forward
    ada = BasicTransformerBlock(16, 2, 8, cross_attention_dim=32, norm_type="ada_norm_zero",
                                num_embeds_ada_norm=10)
    assert unet_lean.lean_forwards(ada)["transformer"] == 0 and "forward" not in ada.__dict__
