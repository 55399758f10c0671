"""Built-in tiny models (teacher, VAE, scorer, probe), their procedural data and training recipes.

The nodes that load the image models live in ``nodes.core`` (they wrap ``nodes.zoo.builtin``); this pack
registers the built-in video model's nodes (``nodes.zoo.video.nodes``).
"""


def entrypoint() -> list[type]:
    """The video model's loader and sampler; the core loaders expose the image models."""
    from fewstep.nodes.zoo.video.nodes import NODES as VIDEO_NODES

    return [*VIDEO_NODES]
