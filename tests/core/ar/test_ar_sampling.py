"""sample_ar / sample_mar against reference loops written from the definitions, on tiny random models."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.core.ar.sampling import (
    ConstantHeadSteps,
    cfg_logits,
    draw_tokens,
    filter_logits,
    masked_count,
    sample_ar,
    sample_mar,
)
from fewstep.nodes.zoo.ar.models import ARConfig, ARTransformer, MARConfig, MARModel

AR_CFG = ARConfig(vocab_size=24, seq_len=12, dim=32, n_layers=2, n_heads=2)
MAR_CFG = MARConfig(token_dim=4, seq_len=12, dim=32, n_layers=1, n_heads=2, head_width=32, head_blocks=1)


@pytest.fixture
def ar() -> ARTransformer:
    torch.manual_seed(0)
    model = ARTransformer(AR_CFG)
    with torch.no_grad():  # sharper logits than the 0.02-std init so that filters and CFG matter
        model.output.weight.mul_(40)
    return model.eval()


@pytest.fixture
def mar() -> MARModel:
    torch.manual_seed(0)
    return MARModel(MAR_CFG).eval()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def _reference_ar(model, cond, scale, temperature, generator, top_k=0, top_p=1.0):
    """Teacher-forced full forward at every step (no cache), CFG as u + s (c - u) from two forward passes."""
    b, length = cond.shape[0], model.config.seq_len
    tokens = torch.zeros(b, length, dtype=torch.long)
    for i in range(length):
        c = model(tokens, cond)[:, i]
        u = model(tokens, None)[:, i]
        logits = c if scale == 1.0 else u + scale * (c - u)
        tokens[:, i] = draw_tokens(filter_logits(logits, top_k, top_p), temperature, generator)
    return tokens


@pytest.mark.parametrize("cfg", [1.0, 2.5])
def test_kv_cache_sampling_equals_no_cache_sampling(ar, cfg):
    cond = torch.randn(3, 384)
    a = sample_ar(ar, cond, cfg_scale=cfg, top_k=10, generator=_gen(7), use_kv_cache=True)
    b = sample_ar(ar, cond, cfg_scale=cfg, top_k=10, generator=_gen(7), use_kv_cache=False)
    assert a.shape == (3, 12) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_ar(ar, cond, cfg_scale=cfg, top_k=10, generator=_gen(8)))


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_sampler_matches_the_reference_definition(ar, cfg):
    cond = torch.randn(2, 384)
    got = sample_ar(ar, cond, cfg_scale=cfg, temperature=0.8, top_p=0.9, generator=_gen(1))
    assert torch.equal(got, _reference_ar(ar, cond, cfg, 0.8, _gen(1), top_p=0.9))


def test_cfg_at_scale_one_is_the_conditional_model(ar):
    c, u = torch.randn(4, 24), torch.randn(4, 24)
    assert torch.equal(cfg_logits(c, u, 1.0), c)
    assert torch.allclose(cfg_logits(c, u, 3.0), u + 3 * (c - u))
    cond = torch.randn(2, 384)
    # scale 1 = sampling the conditional model alone (reference without any null branch)
    assert torch.equal(sample_ar(ar, cond, cfg_scale=1.0, generator=_gen(3)),
                       _reference_ar(ar, cond, 1.0, 1.0, _gen(3)))


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0, -1.0]])
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, False, True, False, False]]
    probs = logits.softmax(-1)[0]  # sorted masses: 0.636, 0.234, 0.086, 0.032, 0.012
    assert probs[0] < 0.7 < probs[0] + probs[2]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, False, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, False, False, False]]
    assert torch.isfinite(filter_logits(logits)).all()
    many = filter_logits(torch.randn(2000, 24, generator=_gen(0)), top_k=3)
    drawn = draw_tokens(many, 1.0, _gen(1))
    assert torch.isfinite(many.gather(1, drawn[:, None])).all()  # never a filtered token
    with pytest.raises(ValueError):
        filter_logits(logits, top_p=0.0)


def test_top_k_one_is_greedy_in_the_sampler(ar):
    cond = torch.randn(2, 384)
    greedy = sample_ar(ar, cond, temperature=0.0, generator=_gen(0))
    assert torch.equal(sample_ar(ar, cond, top_k=1, generator=_gen(5)), greedy)
    assert torch.equal(sample_ar(ar, cond, top_p=1e-6, generator=_gen(6)), greedy)


def test_draw_tokens_follows_the_distribution():
    logits = torch.log(torch.tensor([0.1, 0.6, 0.3])).expand(20000, -1)
    freq = torch.bincount(draw_tokens(logits, 1.0, _gen(0)), minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.1, 0.6, 0.3]), atol=0.015)  # 3.5 sigma of a binomial at n=20000


# ----------------------------------------------------------------------------- MAR
def test_masked_count_reveals_everything_by_the_last_iteration():
    for iters in (1, 4, 12):
        left, counts = 12, []
        for k in range(iters):
            n = masked_count(k, iters, 12, left)
            counts.append(left - n)
            left = n
        assert left == 0 and all(c >= 1 for c in counts) and sum(counts) == 12
    assert masked_count(0, 4, 64, 64) == math.floor(64 * math.cos(math.pi / 8))


def test_mar_sampler_shapes_and_each_token_revealed_once(mar):
    seen = []
    out = sample_mar(mar, torch.randn(3, 384), iterations=5, head_steps=ConstantHeadSteps(3), cfg_scale=2.0,
                     generator=_gen(0), callback=lambda k, kk, s, n: seen.append((k, kk, s, n)))
    assert out.shape == (3, 12, 4) and torch.isfinite(out).all()
    assert [s[0] for s in seen] == list(range(5)) and sum(s[3] for s in seen) == 12
    assert not torch.equal(out, sample_mar(mar, torch.randn(3, 384), iterations=5,
                                           head_steps=ConstantHeadSteps(3), generator=_gen(1)))


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_head_steps_follow_the_schedule(mar, cfg):
    class Recorded:
        def __init__(self):
            self.calls = []

        def __call__(self, iteration: int, iterations: int) -> int:
            self.calls.append((iteration, iterations))
            return 2 * iteration + 1

    schedule, head_calls = Recorded(), []
    hook = mar.diffusion.register_forward_hook(lambda m, args, out: head_calls.append(args[1][0].item()))
    sample_mar(mar, torch.randn(2, 384), iterations=4, head_steps=schedule, cfg_scale=cfg, generator=_gen(0))
    hook.remove()
    assert schedule.calls == [(k, 4) for k in range(4)]
    # one head evaluation per diffusion step (CFG batches both branches): 1 + 3 + 5 + 7 evaluations
    assert len(head_calls) == 1 + 3 + 5 + 7
    assert head_calls[:1] == [999] and head_calls[1:4] == [999, 500, 0]


def test_head_t_max_clips_the_noisiest_step(mar):
    head_calls = []
    hook = mar.diffusion.register_forward_hook(lambda m, args, out: head_calls.append(args[1][0].item()))
    sample_mar(mar, torch.randn(1, 384), iterations=1, head_steps=ConstantHeadSteps(3), generator=_gen(0),
               head_t_max=950)
    hook.remove()
    assert head_calls == [950, 475, 0]


def test_mar_rejects_bad_iterations(mar):
    with pytest.raises(ValueError, match="iterations"):
        sample_mar(mar, torch.randn(1, 384), iterations=13)
    with pytest.raises(ValueError):
        ConstantHeadSteps(0)
