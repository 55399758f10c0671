"""EfficientNet-Lite0: weights really loaded (ImageNet, not random), preprocessing, fp16 copy."""

import pytest
import torch

from fewstep.nodes.zoo import effnet


@pytest.fixture(scope="module")
def model():
    return effnet.load_efficientnet_lite0()


def test_weights_are_the_package_weights(model):
    src = torch.load(effnet.package_weights_path(), map_location="cpu", weights_only=True)
    mine = model.state_dict()
    assert len(src) == len(mine)
    for (sk, sv), (mk, mv) in zip(src.items(), mine.items(), strict=True):
        assert torch.equal(sv, mv), (sk, mk)


def test_features_shape_and_preprocessing(model):
    x = torch.rand(2, 64, 64, 3)
    assert effnet.features(model, x).shape == (2, effnet.FEATURES)
    pre = effnet.preprocess(torch.full((1, 8, 8, 3), 0.485))
    assert pre.shape == (1, 3, 224, 224) and abs(float(pre[0, 0].mean())) < 1e-5  # mean subtracted
    with pytest.raises(ValueError, match=r"\[B,H,W,C\]"):
        effnet.preprocess(torch.rand(2, 3, 64, 64))


def test_features_differ_between_images_and_are_differentiable(model):
    x = torch.rand(2, 64, 64, 3, requires_grad=True)
    f = effnet.features(model, x)
    assert (f[0] - f[1]).abs().max() > 1e-3
    f.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_fp16_copy_matches(model, tmp_path):
    m16 = effnet.load_efficientnet_lite0(effnet.save_fp16_copy(tmp_path / "e.safetensors"))
    x = torch.rand(3, 64, 64, 3)
    a, b = effnet.features(model, x), effnet.features(m16, x)
    assert (a - b).abs().max() < 0.05 * a.abs().max()  # fp16 weight rounding only
