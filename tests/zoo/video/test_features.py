"""The 3D-conv feature net and the temporal Fréchet distance."""

import random

import numpy as np
import torch

from fewstep.nodes.zoo.video import clips
from fewstep.nodes.zoo.video.features import ClipFeatureNet, classification_loss, targets, temporal_fd


def test_features_heads_and_loss_for_both_clip_lengths():
    torch.manual_seed(0)
    net = ClipFeatureNet(width=8, dim=16)
    for frames in (8, 16):
        specs = clips.make_split("train", 3, frames)
        video = torch.from_numpy(np.stack([clips.render_clip(s) for s in specs])).float() / 255
        assert net.features(video).shape == (3, 16)
        out = net(video)
        assert out["motion"].shape == (3, 6) and out["colour"].shape == (3, 6)
        loss = classification_loss(net, video, targets(specs))
        loss.backward()
        assert loss.isfinite() and net.trunk[0][0].weight.grad.abs().sum() > 0


def test_temporal_fd_is_zero_on_identical_sets_and_grows_with_a_different_set():
    torch.manual_seed(0)
    net = ClipFeatureNet(width=8, dim=8).eval()
    rng = random.Random(0)
    right = [clips.sample_start("circle", "red", "large", "moving right", 8, rng) for _ in range(12)]
    still = [clips.sample_start("square", "blue", "small", "standing still", 8, rng) for _ in range(12)]
    a = torch.from_numpy(np.stack([clips.render_clip(s) for s in right]))
    b = torch.from_numpy(np.stack([clips.render_clip(s) for s in still]))
    assert temporal_fd(net, a, a) < 1e-6
    assert temporal_fd(net, a, b) > 3 * temporal_fd(net, a[:6], a[6:]) > 0  # random weights: ~6x measured
