"""A small 3D-conv clip classifier whose pooled features give a temporal Fréchet distance ("FD-Clip3D").

FVD (Unterthiner et al. 2018) is the Fréchet distance (Heusel et al. 2017, eq. 6) of I3D features of
clips; I3D weights are not available offline, so we train our own feature extractor on the procedural
clips: four strided 3D convolutions over ``[B, 3, T, 64, 64]``, global average pooling to 64-d features,
and linear heads for motion (6), shape (5), colour (6) and size (2). Its features must see motion
(direction needs the time axis), appearance and size, so the distance reacts to wrong motion, wrong
objects and blur. Values compare only between our own runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fewstep.nodes.zoo import data
from fewstep.nodes.zoo.video import clips

FEATURES_FILE = "fewstep-tiny-video-features.safetensors"
HEADS: dict[str, int] = {"motion": len(clips.MOTIONS), "shape": len(data.SHAPES), "colour": len(data.COLOURS),
                         "size": len(data.SIZES)}


def _block(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class ClipFeatureNet(nn.Module):
    """``[B, T, 64, 64, 3]`` in 0..1 -> features ``[B, dim]`` (``features``) and head logits (``forward``)."""

    def __init__(self, width: int = 16, dim: int = 64):
        super().__init__()
        w = width
        self.trunk = nn.Sequential(                      # (T, 64, 64) -> (T, 32, 32) -> (T, 16, 16) -> (T/2, 8, 8) -> (T/2, 4, 4)
            _block(3, w, (1, 2, 2)), _block(w, 2 * w, (1, 2, 2)), _block(2 * w, 4 * w, (2, 2, 2)),
            _block(4 * w, dim, (1, 2, 2)))
        self.heads = nn.ModuleDict({k: nn.Linear(dim, n) for k, n in HEADS.items()})

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"ClipFeatureNet: frames must be [B, T, H, W, 3], got {tuple(frames.shape)}")
        x = frames.permute(0, 4, 1, 2, 3).float() * 2 - 1               # [B, 3, T, H, W]
        if x.shape[-2:] != (64, 64):
            raise ValueError("ClipFeatureNet: frames must be 64x64")
        return self.trunk(x).mean(dim=(2, 3, 4))                          # [B, dim]

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(frames)
        return {k: head(f) for k, head in self.heads.items()}


def targets(specs: list[clips.ClipSpec]) -> dict[str, torch.Tensor]:
    """Class indices per head for ``specs``."""
    return {"motion": torch.tensor([clips.MOTIONS.index(s.motion) for s in specs]),
            "shape": torch.tensor([data.SHAPES.index(s.shape) for s in specs]),
            "colour": torch.tensor([list(data.COLOURS).index(s.colour) for s in specs]),
            "size": torch.tensor([list(data.SIZES).index(s.size) for s in specs])}


def classification_loss(net: ClipFeatureNet, frames: torch.Tensor, target: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over heads of the cross-entropy."""
    logits = net(frames)
    return sum(F.cross_entropy(logits[k], target[k].to(logits[k].device)) for k in HEADS)


@torch.no_grad()
def clip_features(net: ClipFeatureNet, frames: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Features ``[N, dim]`` (float64 numpy) of clips ``[N, T, 64, 64, 3]`` in 0..1 (or uint8)."""
    p = next(net.parameters())
    out = []
    for i in range(0, len(frames), batch):
        f = frames[i:i + batch]
        f = f.float() / 255.0 if f.dtype == torch.uint8 else f.float()
        out.append(net.features(f.to(p.device, p.dtype)).double().cpu())
    return torch.cat(out).numpy()


def temporal_fd(net: ClipFeatureNet, frames_a: torch.Tensor, frames_b: torch.Tensor) -> float:
    """Fréchet distance of the clip features of two sets of clips (``[N, T, 64, 64, 3]`` each)."""
    from fewstep.nodes.core.metrics import frechet_distance

    return frechet_distance(clip_features(net, frames_a), clip_features(net, frames_b))


def load_features(device: str | torch.device = "cpu", root: Path | None = None) -> ClipFeatureNet:
    """The shipped feature net from ``weights/`` (``root`` overrides the folder)."""
    import json

    from safetensors.torch import load_file

    from fewstep.nodes.zoo.builtin import weights_dir

    path = Path(root or weights_dir()) / FEATURES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"video feature net: {path} is missing (python -m fewstep.nodes.zoo.video.train)")
    cfg = json.loads(path.with_suffix(".json").read_text())
    net = ClipFeatureNet(**cfg["net"])
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    return net.eval().requires_grad_(False).to(device)
