"""Training recipes and the caption cache on tiny sizes: data encoding, AR/MAR loops, lr schedule, int8 cache."""

from __future__ import annotations

import json
import random

import pytest
import torch

from fewstep.nodes.zoo import data
from fewstep.nodes.zoo.ar import captions, train
from fewstep.nodes.zoo.ar.models import ARConfig, MARConfig
from fewstep.nodes.zoo.ar.tokenizer import VQConfig, VQTokenizer


@pytest.fixture(scope="module")
def tiny_set() -> captions.CaptionSet:
    scenes = data.make_split("train", 12, seed=5)
    return captions.CaptionSet("train", 5, scenes, [data.caption(s) for s in scenes], torch.randn(12, 384))


def test_rejitter_keeps_the_caption_and_moves_objects():
    scene = data.make_split("train", 1, seed=2)[0]
    moved = train.rejitter(scene, random.Random(0))
    assert data.caption(moved) == data.caption(scene)
    assert [(o.row, o.col) for o in moved.objects] == [(o.row, o.col) for o in scene.objects]
    assert any((a.dx, a.dy) != (b.dx, b.dy) for a, b in zip(moved.objects, scene.objects, strict=True))


def test_encode_dataset_shapes_and_variant_zero_is_the_scene(tiny_set):
    tok = VQTokenizer(VQConfig(dim=8, codebook_size=32))
    tokens, latents = train.encode_dataset(tok, tiny_set.scenes, variants=2)
    assert tokens.shape == (2, 12, 64) and latents.shape == (2, 12, 64, 8)
    assert torch.equal(tokens[0].long(), tok.encode(train.render_images(tiny_set.scenes)))
    assert not torch.equal(tokens[0], tokens[1])  # fresh jitter changes some patches


def test_lr_schedule_warms_up_then_anneals_by_steps_or_time():
    r = train.Recipe(steps=100, lr=1.0, warmup=10, seconds=50.0)
    assert train.lr_at(0, r) == pytest.approx(0.1) and train.lr_at(9, r) == pytest.approx(1.0)
    assert train.lr_at(100, r) == pytest.approx(0.1)
    assert train.lr_at(20, r, elapsed=50.0) == pytest.approx(0.1)   # the time budget ends annealed too
    assert train.lr_at(20, r, elapsed=0.0) > 0.9


def test_recipes_train_and_stop_at_the_step_budget(tiny_set):
    tok = VQTokenizer(VQConfig(dim=8, codebook_size=32))
    tokens, latents = train.encode_dataset(tok, tiny_set.scenes, variants=1)
    recipe = train.Recipe(steps=4, batch_size=4, warmup=1)
    ar, log = train.train_ar(tokens, tiny_set, ARConfig(vocab_size=32, dim=32, n_layers=1, n_heads=2), recipe, "cpu")
    assert log[-1]["step"] == 4 and not ar.training
    mar, log = train.train_mar(latents, tiny_set, MARConfig(token_dim=8, dim=32, n_layers=1, n_heads=2, head_width=32,
                                                            head_blocks=1), recipe, "cpu")
    assert log[-1]["step"] == 4
    # the MAR model whitens by the per-dimension std of its training tokens
    assert torch.allclose(mar.token_std, latents.float().reshape(-1, 8).std(0), rtol=1e-4)


def test_int8_caption_rows_are_close():
    x = torch.nn.functional.normalize(torch.randn(50, 384), dim=-1)
    q, scale = captions.quantize_rows(x)
    err = (captions.dequantize_rows(q, scale) - x).norm(dim=-1)
    assert q.dtype == torch.int8 and err.max() < 0.01  # half a step of max|x|/127 per entry: ~0.4% of the norm


def test_read_cache_refuses_captions_that_changed(tmp_path, monkeypatch):
    # the cache logic only (no MiniLM): embeddings of ones
    monkeypatch.setattr(captions, "sentence_embeddings", lambda texts, encoder=None, batch=128: torch.ones(len(texts), 384))
    captions.write_cache(tmp_path, n_train=6, n_heldout=3)
    got = captions.read_cache(tmp_path, "heldout")
    assert len(got.captions) == 3 and got.embeddings.shape == (3, 384)
    assert got.captions == [data.caption(s) for s in data.make_split("heldout", 3, seed=0)]
    meta = json.loads((tmp_path / captions.CACHE_META).read_text())
    meta["train"]["sha1"] = "0" * 40
    (tmp_path / captions.CACHE_META).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="differ from the cached"):
        captions.read_cache(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="python -m fewstep.nodes.zoo.ar.captions"):
        captions.read_cache(tmp_path / "missing", "train")
