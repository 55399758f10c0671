"""The video model bundle on a tiny random DiT: generation, CFG, save/load, token cache, the loss."""

import pytest
import torch

from fewstep.nodes.zoo.builtin import load_vae
from fewstep.nodes.zoo.video import train
from fewstep.nodes.zoo.video.dit import PRESETS, VideoDiT
from fewstep.nodes.zoo.video.model import VideoModel, generate, load_video_model, real_tokens, text_to_video


class StubEncoder:
    """Deterministic 'MiniLM': one token per word plus two, states from a hash of the word, padded to 77."""

    def encode_tokens(self, texts):
        states, mask = torch.zeros(len(texts), 77, 384), torch.zeros(len(texts), 77, dtype=torch.long)
        for i, text in enumerate(texts):
            words = ["[CLS]", *text.split(), "[SEP]"]
            for j, w in enumerate(words):
                states[i, j] = torch.randn(384, generator=torch.Generator().manual_seed(sum(map(ord, w))))
            mask[i, :len(words)] = 1
        return states, mask


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    dit = VideoDiT(PRESETS["test"]).eval().requires_grad_(False)
    for p in dit.parameters():
        p.add_(0.05 * torch.randn_like(p))
    vae, scale = load_vae(lean=True)
    return VideoModel(dit, vae, scale, StubEncoder())


def test_generate_shapes_and_seeds(model):
    frames, latents = generate(model, ["a small red circle moving right"], frames=3, steps=2, cfg=1.0, seed=5)
    assert frames.shape == (1, 3, 64, 64, 3) and latents.shape == (1, 3, 4, 16, 16)
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1
    again, _ = generate(model, ["a small red circle moving right"], frames=3, steps=2, cfg=1.0, seed=5)
    other, _ = generate(model, ["a small red circle moving right"], frames=3, steps=2, cfg=1.0, seed=6)
    assert torch.equal(frames, again) and not torch.equal(frames, other)
    guided, _ = generate(model, ["a small red circle moving right"], frames=3, steps=2, cfg=4.0, seed=5)
    assert not torch.allclose(guided, frames)
    with pytest.raises(ValueError, match="frames"):
        generate(model, ["x"], frames=9, steps=1)


def test_text_to_video_returns_a_video(model):
    video = text_to_video(model, "a large blue square bouncing", frames=2, steps=1, cfg=2.0, seed=1)
    assert video.frames.shape == (2, 64, 64, 3) and video.fps == 8
    assert video.metadata["description"] == "a large blue square bouncing" and "1 steps" in video.metadata["comment"]
    with pytest.raises(ValueError, match="prompt is empty"):
        text_to_video(model, "  ")


def test_save_and_load_round_trip(model, tmp_path):
    cfg = train.VideoTrainConfig(dit_preset="test")
    train.save_outputs(tmp_path, cfg, {"note": "test"}, model.dit, None)
    loaded = load_video_model(root=tmp_path, text_encoder=StubEncoder())
    for (k, a), (_, b) in zip(model.dit.state_dict().items(), loaded.dit.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a.half().float(), msg=k)  # stored in fp16
    assert loaded.dit.config == model.dit.config and loaded.fps == 8


def test_token_cache_equals_the_encoder_on_real_tokens(tmp_path):
    captions = ["a small red circle moving right", "", "a large white cross standing still"]
    path = train.write_text_cache(tmp_path / "tokens.safetensors", captions, StubEncoder())
    cache = train.TextTokenCache.load(path)
    got, got_mask = real_tokens(*cache.encode_tokens(captions))
    want, want_mask = real_tokens(*StubEncoder().encode_tokens(captions))
    assert torch.equal(got_mask, want_mask)
    torch.testing.assert_close(got, want.half().float())
    with pytest.raises(ValueError, match="not in the cache"):
        cache.encode_tokens(["a green diamond moving up"])


def test_flow_matching_loss_is_zero_for_the_exact_velocity():
    """With data x0 = 0 the path is x = sigma eps, so v = eps = x / sigma exactly."""

    class Exact(torch.nn.Module):
        def forward(self, x, t, ctx, mask):
            return x / (t / 1000).view(-1, 1, 1, 1, 1)

    g = torch.Generator().manual_seed(0)
    loss = train.FlowMatchingLoss(3.0)(Exact(), torch.zeros(4, 2, 4, 16, 16), None, None, g)
    assert loss.shape == (4,) and float(loss.max()) < 1e-10
    dit = VideoDiT(PRESETS["test"])
    loss = train.FlowMatchingLoss(3.0)(dit, torch.randn(2, 2, 4, 16, 16), torch.randn(2, 3, 384),
                                       torch.ones(2, 3, dtype=torch.bool), g)
    loss.mean().backward()
    assert loss.shape == (2,) and dit.patch_out.weight.grad.abs().sum() > 0
