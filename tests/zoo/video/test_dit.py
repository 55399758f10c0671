"""The video DiT on a tiny config: shapes, gradients, text conditioning, the attention hook."""

import pytest
import torch
import torch.nn.functional as F

from fewstep.nodes.zoo.video.dit import PRESETS, VideoDiT, sdpa_attention


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    model = VideoDiT(PRESETS["test"]).eval()
    for p in model.parameters():  # the zero-initialised output would hide every difference
        p.data.add_(0.02 * torch.randn_like(p))
    return model


def _inputs(b=2, t=3, length=5):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, t, 4, 16, 16, generator=g)
    ctx = torch.randn(b, length, 384, generator=g)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[1, 2:] = False
    return x, torch.tensor([900.0, 100.0]), ctx, mask


def test_forward_backward_shapes(dit):
    x, t, ctx, mask = _inputs()
    x.requires_grad_(True)
    out = dit(x, t, ctx, mask)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    grads = [p.grad for p in dit.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    dit.zero_grad(set_to_none=True)


def test_patchify_round_trip_and_frame_major_order(dit):
    x = torch.randn(2, 3, 4, 16, 16)
    tokens = dit.patchify(x)
    assert tokens.shape == (2, 3 * 64, 16)
    torch.testing.assert_close(dit.unpatchify(tokens, 3), x, rtol=0, atol=0)
    # token n of frame f lies in rows f*64 .. f*64+63: changing frame 1 changes only those tokens
    y = x.clone()
    y[:, 1] += 1
    changed = (dit.patchify(y) != tokens).any(-1).any(0)
    assert changed[64:128].all() and not changed[:64].any() and not changed[128:].any()


def test_padding_tokens_are_masked_out(dit):
    x, t, ctx, mask = _inputs()
    with torch.no_grad():
        ref = dit(x, t, ctx, mask)
        ctx2 = ctx.clone()
        ctx2[1, 2:] = 100.0  # padding of sample 1
        torch.testing.assert_close(dit(x, t, ctx2, mask), ref, rtol=1e-5, atol=1e-5)
        ctx2[1, 0] = 100.0   # a real token of sample 1
        assert not torch.allclose(dit(x, t, ctx2, mask)[1], ref[1], atol=1e-3)


def _manual_attention(q, k, v, *, mask=None, grid=None):
    w = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    if mask is not None:
        w = w.masked_fill(~mask, float("-inf"))
    return F.softmax(w, dim=-1) @ v


def test_custom_attention_fn_equal_to_default_gives_same_output(dit):
    x, t, ctx, mask = _inputs()
    with torch.no_grad():
        ref = dit(x, t, ctx, mask)
        dit.set_attention_fn(_manual_attention)
        try:
            out = dit(x, t, ctx, mask)
        finally:
            dit.set_attention_fn(sdpa_attention)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_attention_hook_sees_the_token_grid_and_changes_the_output(dit):
    x, t, ctx, mask = _inputs(t=3)
    seen = []

    def frame_diagonal(q, k, v, *, mask=None, grid=None):
        seen.append((grid, tuple(q.shape)))
        frames, h, w = grid
        tile = torch.arange(frames).repeat_interleave(h * w)   # frame of each token (frame-major order)
        return sdpa_attention(q, k, v, mask=tile[:, None] == tile[None, :])

    with torch.no_grad():
        ref = dit(x, t, ctx, mask)
        dit.set_attention_fn(frame_diagonal, layers=[1])
        try:
            out = dit(x, t, ctx, mask)
        finally:
            dit.set_attention_fn(sdpa_attention)
    assert seen == [((3, 8, 8), (2, 2, 192, 16))]       # only block 1, self-attention only
    assert not torch.allclose(out, ref, atol=1e-4)
    assert dit.blocks[1].attention_fn is sdpa_attention


def test_bad_inputs_raise(dit):
    x, t, ctx, mask = _inputs()
    with pytest.raises(ValueError, match="frames"):
        dit(torch.randn(1, 9, 4, 16, 16), t[:1], ctx[:1], mask[:1])
    with pytest.raises(ValueError, match="context"):
        dit(x, t, ctx[..., :100], mask)
