"""AR nodes on tiny random models: tokenizer encode/decode, AR and MAR samplers, schedule override, errors."""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.core.ar.bundle import ARModelBundle, ARTokens
from fewstep.nodes.core.ar.nodes import ARSampler, ARTokenizerDecode, ARTokenizerEncode, MARSampler
from fewstep.nodes.zoo.ar.models import ARConfig, ARTransformer, MARConfig, MARModel
from fewstep.nodes.zoo.ar.tokenizer import VQConfig, VQTokenizer

VQ = VQConfig(dim=8, codebook_size=32)


@pytest.fixture
def tokenizer() -> VQTokenizer:
    torch.manual_seed(0)
    return VQTokenizer(VQ)


def _positive(dim: int = 384) -> list:
    return [[torch.zeros(1, 77, 384), {"pooled_output": torch.randn(1, dim)}]]


def _ar_bundle(tok: VQTokenizer) -> ARModelBundle:
    return ARModelBundle("ar", ARTransformer(ARConfig(vocab_size=32, dim=32, n_layers=1, n_heads=2)).eval(), tok, "tiny-ar")


def _mar_bundle(tok: VQTokenizer) -> ARModelBundle:
    model = MARModel(MARConfig(token_dim=8, dim=32, n_layers=1, n_heads=2, head_width=32, head_blocks=1)).eval()
    return ARModelBundle("mar", model, tok, "tiny-mar")


def test_encode_decode_nodes_round_trip_codebook_images(tokenizer):
    tokens = torch.randint(0, 32, (2, 64))
    image = tokenizer.decode(tokens).permute(0, 2, 3, 1)                                  # IMAGE layout, unclamped
    (grid,) = ARTokenizerEncode.execute(image=image, tokenizer=tokenizer, mode="discrete").values
    assert torch.equal(grid.tokens, tokens)
    (cont,) = ARTokenizerEncode.execute(image=image, tokenizer=tokenizer, mode="continuous").values
    assert cont.latents.shape == (2, 64, 8)
    (decoded,) = ARTokenizerDecode.execute(tokens=grid, tokenizer=tokenizer).values
    assert decoded.shape == (2, 64, 64, 3) and decoded.min() >= 0 and decoded.max() <= 1
    assert torch.allclose(decoded, image.clamp(0, 1), atol=1e-5)


def test_encode_node_resizes_other_sizes(tokenizer):
    (grid,) = ARTokenizerEncode.execute(image=torch.rand(1, 128, 96, 3), tokenizer=tokenizer, mode="discrete").values
    assert grid.tokens.shape == (1, 64)


def test_ar_sampler_node_outputs_images_and_tokens(tokenizer):
    kw = {"positive": _positive(), "batch_size": 3, "seed": 5, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
          "cfg": 2.0}
    image, grid = ARSampler.execute(ar_model=_ar_bundle(tokenizer), kv_cache=True, **kw).values
    assert image.shape == (3, 64, 64, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert grid.tokens.shape == (3, 64)
    bundle = _ar_bundle(tokenizer)
    a = ARSampler.execute(ar_model=bundle, kv_cache=True, **kw).values[1].tokens
    b = ARSampler.execute(ar_model=bundle, kv_cache=False, **kw).values[1].tokens
    assert torch.equal(a, b)  # the seed fixes the tokens, with or without the cache


def test_mar_sampler_node_uses_the_schedule_input_over_head_steps(tokenizer):
    calls = []

    def schedule(iteration: int, iterations: int) -> int:
        calls.append(iteration)
        return 2

    image, grid = MARSampler.execute(ar_model=_mar_bundle(tokenizer), positive=_positive(), batch_size=2, seed=0,
                                     iterations=4, head_steps=50, temperature=1.0, cfg=1.0,
                                     head_step_schedule=schedule).values
    assert calls == [0, 1, 2, 3]
    assert image.shape == (2, 64, 64, 3) and grid.latents.shape == (2, 64, 8)


def test_samplers_refuse_the_other_kind_and_bad_conditioning(tokenizer):
    kw = {"positive": _positive(), "batch_size": 1, "seed": 0, "temperature": 1.0, "cfg": 1.0}
    with pytest.raises(ValueError, match="MAR Sampler"):
        ARSampler.execute(ar_model=_mar_bundle(tokenizer), top_k=0, top_p=1.0, kv_cache=True, **kw)
    with pytest.raises(ValueError, match="AR Sampler"):
        MARSampler.execute(ar_model=_ar_bundle(tokenizer), iterations=2, head_steps=2, **kw)
    kw["positive"] = _positive(768)
    with pytest.raises(ValueError, match="MiniLM sentence embedding"):
        ARSampler.execute(ar_model=_ar_bundle(tokenizer), top_k=0, top_p=1.0, kv_cache=True, **kw)


def test_ar_tokens_hold_exactly_one_kind():
    with pytest.raises(ValueError):
        ARTokens()
    with pytest.raises(ValueError):
        ARTokens(tokens=torch.zeros(1, 64, dtype=torch.long), latents=torch.zeros(1, 64, 8))


def test_mar_sampler_node_passes_a_schedules_noisiest_head_timestep(tokenizer, monkeypatch):
    """DiSA's schedules clip the head's noisiest timestep at 950 (t_max); the node hands it to sample_mar,
    and a schedule without t_max keeps the default (None = 999)."""
    from fewstep.nodes.core.ar import sampling
    from fewstep.nodes.disa.schedules import CLIP_TIMESTEP, LinearHeadSteps

    seen = []
    real = sampling.sample_mar

    def spy(*args, **kwargs):
        seen.append(kwargs.get("head_t_max"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_mar", spy)
    kw = dict(ar_model=_mar_bundle(tokenizer), positive=_positive(), batch_size=1, seed=0, iterations=2,
              head_steps=2, temperature=1.0, cfg=1.0)
    MARSampler.execute(head_step_schedule=LinearHeadSteps(3, 1), **kw)
    MARSampler.execute(head_step_schedule=lambda k, n: 2, **kw)
    assert seen == [CLIP_TIMESTEP, None]
