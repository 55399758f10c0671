"""Autoregressive image generation shared by the AR packs: samplers (``sampling``) over the built-in
AR models of ``nodes.zoo.ar`` and the AR nodes (``nodes``): loaders, tokenizer encode/decode, AR and MAR
samplers."""
