"""ComfyUI's prompt semantics (issue #15): weights, escapes, 77-token windows, clip skip and textual-inversion
embeddings, checked on a tiny random CLIP text encoder against direct transformers calls."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import tiny_sd15

from fewstep.app.api import Paths, use_paths
from fewstep.nodes.core import prompt as P
from fewstep.nodes.core.text import BOS, EOS, ClipTokenizer, TextEncoder

pytest.importorskip("transformers")


def test_weight_syntax() -> None:
    assert P.parse_weights("a (b:1.5) c") == [("a ", 1.0), ("b", 1.5), (" c", 1.0)]
    nested = P.parse_weights("((x)) (y (z:2))")
    assert nested[0] == ("x", pytest.approx(1.21)) and nested[2] == ("y ", pytest.approx(1.1))
    assert nested[3] == ("z", 2.0)                                  # an explicit weight replaces the nesting
    assert P.parse_weights(r"\(x\) [y]") == [("(x) [y]", 1.0)]      # escapes; square brackets are text
    assert P.parse_weights("(a:b)") == [("a:b", pytest.approx(1.1))]  # not a number: literal, emphasised


def test_windows_pack_words_into_77_tokens() -> None:
    tok = ClipTokenizer()
    wins = P.windows(" ".join(["cat"] * 100), tok.encode, BOS, EOS, EOS)
    assert len(wins) == 2 and all(len(w.ids) == 77 for w in wins)
    assert wins[0].ids[:2] == [BOS, tok.encode("cat")[0]] and wins[0].ids[76] == EOS
    assert wins[1].ids[1:26] == tok.encode("cat") * 25 and wins[1].ids[26] == EOS
    # a short multi-token word does not straddle two windows
    word = "photorealistic"
    n = len(tok.encode(word))
    assert 1 < n < P.MAX_WORD_TOKENS
    wins = P.windows(" ".join(["cat"] * 74 + [word]), tok.encode, BOS, EOS, 0)
    assert wins[0].ids[75] == EOS and wins[0].ids[76] == 0 and wins[1].ids[1:1 + n] == tok.encode(word)


@pytest.fixture(scope="module")
def clip():
    _, _, text = tiny_sd15()
    return text


def _ids(text: str) -> torch.Tensor:
    return torch.tensor([ClipTokenizer()(text)])


def test_plain_weighted_and_long_prompts(clip) -> None:
    enc = TextEncoder("sd1", [clip], [ClipTokenizer()])
    with torch.no_grad():
        z = clip(_ids("a cat")).last_hidden_state
        e = clip(_ids("")).last_hidden_state
    torch.testing.assert_close(enc.encode("a cat")[0][0], z)
    torch.testing.assert_close(enc.encode("a (cat:1.0)")[0][0], z)
    weighted = enc.encode("a (cat:1.5)")[0][0]
    want = z.clone()
    want[:, 2] = e[:, 2] + 1.5 * (z[:, 2] - e[:, 2])                 # BOS, "a", "cat": only "cat" moves
    torch.testing.assert_close(weighted, want)
    long = enc.encode(" ".join(["cat"] * 100))
    assert long[0][0].shape == (1, 154, 64)
    with torch.no_grad():
        second = clip(torch.tensor([[BOS] + ClipTokenizer().encode("cat") * 25 + [EOS] * 51])).last_hidden_state
    torch.testing.assert_close(long[0][0][:, 77:], second)


def test_clip_skip(clip) -> None:
    enc = TextEncoder("sd1", [clip], [ClipTokenizer()], layer=-2)
    with torch.no_grad():
        out = clip(_ids("a cat"), output_hidden_states=True)
    norm = next(m for name, m in clip.named_modules() if name.endswith("final_layer_norm"))
    torch.testing.assert_close(enc.encode("a cat")[0][0], norm(out.hidden_states[-2]))
    last = TextEncoder("sd1", [clip], [ClipTokenizer()], layer=-1).encode("a cat")[0][0]
    torch.testing.assert_close(last, out.last_hidden_state)


def test_textual_inversion_embedding(clip, tmp_path) -> None:
    vectors = torch.randn(2, 64)
    (tmp_path / "embeddings").mkdir()
    save_file({"emb_params": vectors}, str(tmp_path / "embeddings" / "style.safetensors"))
    enc = TextEncoder("sd1", [clip], [ClipTokenizer()])
    with use_paths(Paths(model_roots=(tmp_path,))):
        got = enc.encode("a embedding:style, cat")[0][0]
        missing = enc.encode("a embedding:nothing cat")[0][0]
    # the same as a model whose vocabulary rows 100 and 101 hold the two vectors
    twin = copy.deepcopy(clip)
    with torch.no_grad():
        twin.get_input_embeddings().weight[100:102] = vectors
        tok = ClipTokenizer()
        ids = [BOS] + tok.encode("a") + [100, 101] + tok.encode(",") + tok.encode("cat") + [EOS]
        want = twin(torch.tensor([ids + [EOS] * (77 - len(ids))])).last_hidden_state
        plain = clip(_ids("a cat")).last_hidden_state
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(missing, plain)                       # unknown embedding: skipped
