"""MiniLM text encoder: shapes, padding, pooled norm, and the pruned copy against the full model."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fewstep.nodes.zoo import data  # noqa: E402
from fewstep.nodes.zoo.text_encoder import MAX_LENGTH, MiniLMTextEncoder, prune  # noqa: E402


@pytest.fixture(scope="module")
def full():
    return MiniLMTextEncoder.from_package()


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    return MiniLMTextEncoder.from_pruned(prune(tmp_path_factory.mktemp("minilm")))


@pytest.fixture(scope="module")
def captions():
    return [data.caption(s) for s in data.make_split("heldout", 24, seed=5)] + [""]


def test_shapes_and_pooled_is_unit_mean_of_real_tokens(full, captions):
    states, pooled = full.encode(captions)
    assert states.shape == (len(captions), MAX_LENGTH, 384) and pooled.shape == (len(captions), 384)
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(len(captions)), atol=1e-5)
    _, mask = full.tokenize(captions[:1])
    n = int(mask.sum())
    manual = torch.nn.functional.normalize(states[0, :n].mean(0), dim=0)
    assert torch.allclose(manual, pooled[0], atol=1e-5)


def test_pruned_equals_full_with_fp16_rounded_weights(full, pruned, captions):
    rounded = MiniLMTextEncoder(MiniLMTextEncoder.from_package().model.half().float(), full.tokenizer)
    s_ref, p_ref = rounded.encode(captions)
    s, p = pruned.encode(captions)
    # same fp16 weights, same fp32 arithmetic: the only difference is which embedding table is gathered
    assert torch.allclose(s, s_ref, atol=1e-5) and torch.allclose(p, p_ref, atol=1e-5)
    # against the fp32 original the gap is fp16 weight rounding: small against states of order 1
    s32, p32 = full.encode(captions)
    assert (s - s32).abs().max() < 0.15 and (p - p32).abs().max() < 2e-3
    assert pruned.model.config.vocab_size < 100  # the pruning really happened


def test_words_outside_the_grammar_map_to_unk_in_the_pruned_copy(full, pruned):
    s_full, _ = full.encode(["a red elephant"])
    s_pr, _ = pruned.encode(["a red elephant"])
    assert (s_full - s_pr).abs().max() > 0.1  # "elephant" is not kept: it becomes [UNK]


def test_rejects_a_bare_string(full):
    with pytest.raises(TypeError, match="list of strings"):
        full.encode("a red circle")
