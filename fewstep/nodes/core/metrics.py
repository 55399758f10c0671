"""Evaluation metrics: FD-EffNet, exact attribute alignment (probe), scorer similarity.

FD-EffNet is the Fréchet distance of Heusel et al. 2017 (FID, eq. 6):
``|mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})`` computed on EfficientNet-Lite0's pooled 1280-d
features instead of Inception's (not available offline; see ``shared/resources.md``). Values are therefore
not comparable with published FIDs, only between our own runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance of two Gaussian fits ([N, D] feature arrays, N >= 2), in float64.

    The matrix square root uses ``scipy.linalg.sqrtm``; its tiny imaginary part (numerical) is dropped."""
    import scipy.linalg

    _check_features(feats_a, feats_b)
    a, b = feats_a.astype(np.float64), feats_b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = scipy.linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():                 # singular product: regularise (as pytorch-fid does)
        eps = np.eye(len(cov_a)) * 1e-6
        root = scipy.linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root.real)
    return float(max(value, 0.0))


def frechet_distance_few(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """The Fréchet distance of ``metrics.frechet_distance`` (FID, Heusel et al. 2017, eq. 6), exact, for few
    samples: ``|mu_a - mu_b|^2 + tr S_a + tr S_b - 2 tr (S_a S_b)^{1/2}``, [N, D] and [M, D] features.

    With centred features X_a [N, D], X_b [M, D], S_a = X_a^T X_a / (N-1) and S_b = X_b^T X_b / (M-1), so the
    non-zero eigenvalues of S_a S_b are those of C C^T / ((N-1)(M-1)) with C = X_a X_b^T [N, M]: hence
    tr (S_a S_b)^{1/2} = ||C||_* / sqrt((N-1)(M-1)) (nuclear norm). An [N, M] SVD instead of a D x D matrix
    square root: for D = 1280, N = 4, M = 64, scipy's sqrtm took 6.7 s of CPU per call on this machine."""
    _check_features(feats_a, feats_b)
    n, m = len(feats_a), len(feats_b)
    a, b = feats_a.astype(np.float64), feats_b.astype(np.float64)
    xa, xb = a - a.mean(0), b - b.mean(0)
    cross = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    trace_a, trace_b = (xa**2).sum() / (n - 1), (xb**2).sum() / (m - 1)
    value = ((a.mean(0) - b.mean(0)) ** 2).sum() + trace_a + trace_b - 2 * cross
    return float(max(value, 0.0))


def _check_features(feats_a: np.ndarray, feats_b: np.ndarray) -> None:
    if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"frechet_distance: need [N, D] arrays of one D, got {feats_a.shape} and {feats_b.shape}")
    if min(len(feats_a), len(feats_b)) < 2:
        raise ValueError("frechet_distance: need at least 2 samples on each side")


def reference_images(n: int, seed: int = 0, split: str = "heldout") -> tuple[torch.Tensor, list[str]]:
    """n real renders [n, 64, 64, 3] in 0..1 of the procedural set and their captions."""
    from fewstep.nodes.zoo import data

    scenes = data.make_split(split, n, seed=seed)
    arrays = [np.asarray(data.render(s), dtype=np.float32) / 255.0 for s in scenes]
    return torch.from_numpy(np.stack(arrays)), [data.caption(s) for s in scenes]


def effnet_features(images: torch.Tensor, model: Any = None, batch: int = 64) -> np.ndarray:
    """Pooled EfficientNet-Lite0 features [N, 1280] of IMAGE tensors."""
    from fewstep.nodes.zoo.effnet import features, load_efficientnet_lite0

    model = model or load_efficientnet_lite0()
    with torch.no_grad():
        chunks = [features(model, images[i:i + batch]).float().cpu() for i in range(0, len(images), batch)]
    return torch.cat(chunks).numpy()


def fd_effnet(images: torch.Tensor, reference: torch.Tensor, model: Any = None) -> float:
    """FD-EffNet between generated and reference images."""
    return frechet_distance(effnet_features(images, model), effnet_features(reference, model))


def attribute_alignment(images: torch.Tensor, prompts: list[str], probe: Any = None) -> dict[str, float]:
    """Probe-read colour / shape / count accuracy against the scenes parsed from procedural prompts."""
    from fewstep.nodes.zoo import data
    from fewstep.nodes.zoo.builtin import load_probe

    scenes = [data.parse_caption(p) for p in prompts]
    bad = [p for p, s in zip(prompts, scenes, strict=True) if s is None]
    if bad:
        raise ValueError(f"attribute alignment needs prompts of the procedural grammar; cannot parse {bad[0]!r}")
    return (probe or load_probe()).evaluate(images, scenes)


def scorer_similarity(images: torch.Tensor, prompts: list[str], scorer: Any = None) -> float:
    """Mean cosine similarity of the tiny image-text scorer."""
    from fewstep.nodes.zoo.builtin import load_scorer

    with torch.no_grad():
        return float((scorer or load_scorer()).score(images, prompts).mean())
