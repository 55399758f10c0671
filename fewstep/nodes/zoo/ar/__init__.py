"""Built-in autoregressive image models of the procedural 64x64 scenes.

- ``tokenizer``: ``VQTokenizer`` - 8x8 pixel patches -> PCA (16-d continuous tokens) -> k-means codebook
  (discrete tokens); 64 tokens per image.
- ``models``: ``ARTransformer`` (LlamaGen-style decoder-only, caption prefix token, KV cache) and
  ``MARModel`` (MAR-style bidirectional masked AR over the continuous tokens with a per-token MLP
  diffusion head).
- ``captions``: caption sets and their MiniLM sentence embeddings (precomputed for GPU machines).
- ``train``: the training recipes (tokenizer fit, AR and MAR training loops, evaluation helpers).
- ``builtin``: loading/saving the shipped weights (``fewstep-tiny-vq``, ``fewstep-tiny-ar``,
  ``fewstep-tiny-mar`` in ``nodes/zoo/weights``).

The samplers and nodes over these models are in ``fewstep.nodes.core.ar``.
"""
