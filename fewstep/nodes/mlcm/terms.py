"""The optional extra terms of the MLCM stage-1 loss, built from the zoo's networks.

TLCM (arXiv 2406.05768 v6, §3.3) adds a latent LPIPS and a reward (MPS) hinge to the consistency loss. Here
the perceptual map Φ is EfficientNet-Lite0's last feature map of the decoded image and the reward is the zoo
scorer's image-prompt cosine. Both decode latents with the VAE *with* gradients (the VAE link's own
``decode`` runs under ``no_grad``), so they cost one VAE decode and one EffNet pass per term and step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from fewstep.nodes.core.train.batches import DistillBatch


def decode_with_grad(vae: Any, latents: Tensor) -> Tensor:
    """Scaled latents [B, C, h, w] -> IMAGE [B, H, W, 3] in 0..1, differentiable in ``latents``.

    ``vae`` is the VAE link value (``VAEWrapper``: diffusers AutoencoderKL + scaling/shift factors).
    """
    z = latents.to(vae.device, vae.dtype) / vae.scaling_factor + vae.shift_factor
    x = vae.vae.decode(z).sample.float().to(latents.device)               # [B, 3, H, W] in about -1..1
    return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)


def effnet_perceptual(vae: Any, effnet: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    """Φ(latents) = EfficientNet-Lite0 feature map [B, 1280, 7, 7] of the decoded images."""
    from fewstep.nodes.zoo.effnet import feature_map

    vae.vae.requires_grad_(False)

    def phi(latents: Tensor) -> Tensor:
        return feature_map(effnet, decode_with_grad(vae, latents)).float()
    return phi


def scorer_reward(vae: Any, scorer: Any) -> Callable[[Tensor, DistillBatch], Tensor]:
    """reward(x0, batch) = the zoo scorer's cosine [B] of each decoded x0 with its prompt (in -1..1)."""
    vae.vae.requires_grad_(False)

    def reward(x0: Tensor, batch: DistillBatch) -> Tensor:
        if batch.prompts is None:
            raise ValueError("the preference term needs the batch's prompts (DistillBatch.prompts is None)")
        return scorer.score(decode_with_grad(vae, x0), batch.prompts).to(x0.device)
    return reward


def zoo_terms(perceptual_weight: float, reward_weight: float, vae: Any, device: str
              ) -> tuple[Callable[[Tensor], Tensor] | None, Callable[[Tensor, DistillBatch], Tensor] | None]:
    """(Φ, reward) for the weights that are > 0 (None for the others); loads the zoo networks on ``device``."""
    if perceptual_weight <= 0 and reward_weight <= 0:
        return None, None
    if vae is None:
        raise ValueError("perceptual_weight / reward_weight > 0 need the VAE input connected (terms act on "
                         "decoded images)")
    perceptual = reward = None
    if perceptual_weight > 0:
        from fewstep.nodes.zoo.effnet import load_efficientnet_lite0

        perceptual = effnet_perceptual(vae, load_efficientnet_lite0(device=device))
    if reward_weight > 0:
        from fewstep.nodes.zoo.builtin import load_scorer

        reward = scorer_reward(vae, load_scorer(device))
    return perceptual, reward
