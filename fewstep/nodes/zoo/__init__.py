"""Built-in tiny models (teacher, VAE, scorer, probe), their procedural data and training recipes.

The nodes that load the image models live in ``nodes.core`` (they wrap ``nodes.zoo.builtin``); this pack
registers the built-in video model's nodes (``nodes.zoo.video.nodes``) and the multi-view teacher's loader
(``nodes.zoo.multiview.nodes``).
"""


def entrypoint() -> list[type]:
    """The video model's loader and sampler and the multi-view teacher's loader; the core loaders expose the
    image models."""
    from fewstep.nodes.zoo.multiview.nodes import NODES as MULTIVIEW_NODES
    from fewstep.nodes.zoo.video.nodes import NODES as VIDEO_NODES

    return [*VIDEO_NODES, *MULTIVIEW_NODES]
