"""Offline hubs, single-threaded torch, and a tiny random video model (real DiT architecture) for the AccVideo tests."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_torch_thread: None) -> None:
    """Every test here runs under ``one_torch_thread``."""


class HashText:
    """A deterministic stand-in text encoder: 3 token states per prompt seeded by its SHA-1 (no MiniLM needed)."""

    def encode_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        states = []
        for t in texts:
            gen = torch.Generator().manual_seed(int(hashlib.sha1(t.encode()).hexdigest()[:8], 16))
            states.append(torch.randn(3, 384, generator=gen))
        return torch.stack(states), torch.ones(len(texts), 3)


def tiny_video_model(seed: int = 0):
    """A VideoModel of a random 2-block DiT over 2 frames of 8x8x4 latents (32 tokens), no VAE."""
    from fewstep.nodes.zoo.video.dit import VideoDiT, VideoDiTConfig
    from fewstep.nodes.zoo.video.model import VideoModel

    torch.manual_seed(seed)
    dit = VideoDiT(VideoDiTConfig(latent_size=8, patch=2, dim=32, depth=2, heads=2, mlp_ratio=2, max_frames=4))
    with torch.no_grad():                       # the zero-initialised output would make every velocity 0
        dit.patch_out.weight.normal_(0, 0.05)
    return VideoModel(dit.eval().requires_grad_(False), None, 1.0, HashText(), fps=8, name="tiny-test-video")


@pytest.fixture
def tiny_model():
    return tiny_video_model()
