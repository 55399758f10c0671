"""Judging generated images of the held-out scenes: FD-EffNet against real renders and probe accuracy.

Shared by the DD and DiSA tables. FD-EffNet (``fewstep.nodes.core.metrics``) is the Fréchet distance of
EfficientNet-Lite0 pooled features; with a few hundred images it carries a positive bias that depends on N,
so only rows judged on the same N are compared. The real reference is one render of each held-out scene.
"""

from __future__ import annotations

import numpy as np
import torch

from fewstep.nodes.zoo import data


class Judge:
    """EfficientNet-Lite0 features of the real renders (computed once) and the zoo's attribute probe."""

    def __init__(self, scenes: list[data.Scene], device: str = "cpu") -> None:
        from fewstep.nodes.core.metrics import effnet_features
        from fewstep.nodes.zoo.builtin import load_probe
        from fewstep.nodes.zoo.effnet import load_efficientnet_lite0

        self.scenes, self.device = scenes, device
        self.effnet = load_efficientnet_lite0(device=device)
        self.probe = load_probe(device)
        real = np.stack([np.asarray(data.render(s), dtype=np.float32) / 255.0 for s in scenes])
        self.real = effnet_features(torch.from_numpy(real).to(device), self.effnet)

    def __call__(self, images: torch.Tensor, reference: np.ndarray | None = None) -> dict[str, float]:
        """images [N, 64, 64, 3] in 0..1 (N = len(scenes), same order) -> fd_effnet, probe accuracies, and with
        ``reference`` features (e.g. the teacher's samples) ``fd_to_reference``."""
        from fewstep.nodes.core.metrics import frechet_distance

        if len(images) != len(self.scenes):
            raise ValueError(f"Judge: {len(images)} images for {len(self.scenes)} scenes")
        images = images.clamp(0, 1).to(self.device)
        feats = self.features(images)
        out = {"fd_effnet": frechet_distance(feats, self.real), **self.probe.evaluate(images, self.scenes)}
        if reference is not None:
            out["fd_to_reference"] = frechet_distance(feats, reference)
        return out

    def features(self, images: torch.Tensor) -> np.ndarray:
        from fewstep.nodes.core.metrics import effnet_features

        return effnet_features(images.clamp(0, 1).to(self.device), self.effnet)


def to_image(chw: torch.Tensor) -> torch.Tensor:
    """Tokenizer output [B, 3, 64, 64] (unclamped) -> IMAGE [B, 64, 64, 3] in 0..1."""
    return chw.clamp(0, 1).permute(0, 2, 3, 1).float()
