"""AccVideo (Zhang et al. 2025, arXiv 2503.19462): a few-step video student trained on the teacher's own
denoising trajectories (SynVid) with trajectory-based few-step guidance and adversarial training at the key
timesteps, on the built-in video model. Library: ``keypoints`` (schedule, 5-step sampler), ``synvid`` (the
trajectory dataset), ``loss`` (L_traj, the teacher-feature discriminator, the latent queues), ``train`` (the
trainer on the shared fit loop); nodes: ``nodes``."""

from __future__ import annotations


def entrypoint() -> list[type]:
    from fewstep.nodes.accvideo.nodes import NODES

    return list(NODES)
