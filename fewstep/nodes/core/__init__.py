"""The core pack: the shared diffusion library (denoisers, schedules, samplers, guidance, loaders, metrics)
and ComfyUI's core nodes over it. Importing this package does not import torch."""

from __future__ import annotations


def entrypoint() -> list[type]:
    """The core node classes (ComfyUI names), by category module, then the metric nodes."""
    from fewstep.nodes.core import nodes_conditioning, nodes_image, nodes_latent, nodes_sampling
    from fewstep.nodes.core.ar.nodes import NODES as AR_NODES
    from fewstep.nodes.core.metric_nodes import METRIC_NODES
    from fewstep.nodes.core.nodes import NODES
    from fewstep.nodes.core.nodes_compare import NODES as COMPARE_NODES
    from fewstep.nodes.core.nodes_guidance import NODES as GUIDANCE_NODES
    from fewstep.nodes.core.nodes_vae_text import NODES as VAE_TEXT_NODES

    return [*NODES, *nodes_latent.NODES, *nodes_conditioning.NODES, *nodes_image.NODES, *nodes_sampling.NODES,
            *GUIDANCE_NODES, *METRIC_NODES, *COMPARE_NODES, *AR_NODES, *VAE_TEXT_NODES]



def warm_up() -> None:
    """Import what loading a checkpoint needs, once, in the background when a queue worker starts (see
    ``app.registry.start_warm_up``): torch, diffusers' UNet / VAE and transformers' CLIP text models (their
    lazy modules resolve the classes on first attribute access; that is the slow part, 10-26 s measured on
    the 2-core dev VM), and our loader modules."""
    import torch  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextModel, CLIPTextModelWithProjection  # noqa: F401

    from fewstep.nodes.core import samplers, vae_fast  # noqa: F401
    from fewstep.nodes.core.loaders import sd  # noqa: F401
