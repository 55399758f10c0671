"""Built-in tiny models (teacher, VAE, scorer, probe), their procedural data and training recipes.

The nodes that load these models live in ``nodes.core`` (they wrap ``nodes.zoo.builtin``); this pack
registers no nodes of its own.
"""


def entrypoint() -> list[type]:
    """No zoo-specific nodes: the core loaders expose the built-in models."""
    return []
