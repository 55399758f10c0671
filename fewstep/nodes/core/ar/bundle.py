"""Link values of the AR nodes and loading the built-in AR models through the engine's model cache.

Types (plain strings in graphs):
- ``AR_MODEL``: an :class:`ARModelBundle` (the AR or MAR network, its tokenizer, its name).
- ``AR_TOKENIZER``: a ``nodes.zoo.ar.tokenizer.VQTokenizer``.
- ``AR_TOKENS``: an :class:`ARTokens` (discrete ids or continuous latents of a token grid).
- ``HEAD_STEP_SCHEDULE``: a ``sampling.HeadStepSchedule`` (callable ``(iteration, iterations) -> steps``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fewstep.nodes.core.ar.nodes import BUILTIN_AR_MODELS
from fewstep.nodes.zoo.ar.models import ARTransformer, MARModel
from fewstep.nodes.zoo.ar.tokenizer import VQTokenizer

AR_TOKENIZER = "AR_TOKENIZER"
AR_TOKENS = "AR_TOKENS"
HEAD_STEP_SCHEDULE = "HEAD_STEP_SCHEDULE"


@dataclass
class ARModelBundle:
    """The AR_MODEL link value.

    Args:
        kind: ``"ar"`` (an ``ARTransformer`` over token ids) or ``"mar"`` (a ``MARModel`` over continuous tokens).
        model: the network, eval mode.
        tokenizer: the VQ tokenizer its tokens belong to.
        name: where it came from (shown in errors).
    """

    kind: str
    model: ARTransformer | MARModel
    tokenizer: VQTokenizer
    name: str

    def require(self, kind: str, node: str) -> None:
        """Raise a clear error when a node gets the other kind of model."""
        if self.kind != kind:
            other = "MAR Sampler" if self.kind == "mar" else "AR Sampler"
            raise ValueError(f"{node}: {self.name} is a {self.kind.upper()} model; connect it to the {other} node")


@dataclass
class ARTokens:
    """The AR_TOKENS link value: a token grid, discrete or continuous."""

    tokens: torch.Tensor | None = None
    latents: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.tokens is None) == (self.latents is None):
            raise ValueError("ARTokens: set exactly one of tokens (discrete) or latents (continuous)")

    def decode(self, tokenizer: VQTokenizer) -> torch.Tensor:
        """IMAGE ``[B, H, W, 3]`` in 0..1 (clamped) of the grid."""
        with torch.no_grad():
            if self.tokens is not None:
                x = tokenizer.decode(self.tokens.to(tokenizer.codebook.device))
            else:
                x = tokenizer.decode_continuous(self.latents.to(tokenizer.codebook.device))
        return x.clamp(0, 1).permute(0, 2, 3, 1).float().cpu()


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_builtin_tokenizer() -> VQTokenizer:
    """The shipped VQ tokenizer (model cache: one copy per process)."""
    from fewstep.nodes.core.loaders.files import cached
    from fewstep.nodes.zoo.ar import builtin

    dev = _device()
    path = builtin.weights_dir() / builtin.VQ_FILE
    return cached(path, torch.float32, dev, lambda: builtin.load_tokenizer(device=dev))


def load_builtin_model(name: str) -> ARModelBundle:
    """``fewstep-tiny-ar`` or ``fewstep-tiny-mar`` with the shipped tokenizer, fp32 on CUDA when present."""
    from fewstep.nodes.core.loaders.files import cached
    from fewstep.nodes.zoo.ar import builtin

    if name not in BUILTIN_AR_MODELS:
        raise ValueError(f"unknown built-in AR model {name!r}; known: {sorted(BUILTIN_AR_MODELS)}")
    kind, dev = BUILTIN_AR_MODELS[name], _device()
    path = builtin.weights_dir() / builtin.KINDS[kind]
    load = builtin.load_ar if kind == "ar" else builtin.load_mar
    model = cached(path, torch.float32, dev, lambda: load(device=dev))
    return ARModelBundle(kind, model, load_builtin_tokenizer(), name)


def builtin_text_encoder() -> object:
    """The CLIP link value of the MiniLM encoder the AR models are conditioned on (lean, pure torch)."""
    from fewstep.nodes.core.loaders.files import cached
    from fewstep.nodes.core.text import TextEncoder
    from fewstep.nodes.zoo.lean import load_minilm
    from fewstep.nodes.zoo.text_encoder import package_model_path

    dev = _device()
    encoder = cached(package_model_path() / "model.safetensors", torch.float32, dev, lambda: load_minilm(device=dev))
    return TextEncoder("builtin", [encoder])


def caption_condition(conditioning: list, batch: int, cond_dim: int, device: torch.device) -> torch.Tensor:
    """Sentence embeddings ``[batch, cond_dim]`` from a CONDITIONING's ``pooled_output`` (first entry)."""
    if not conditioning:
        raise ValueError("AR sampler: the positive conditioning is empty")
    pooled = conditioning[0][1].get("pooled_output")
    if pooled is None or pooled.ndim != 2 or pooled.shape[-1] != cond_dim:
        got = None if pooled is None else tuple(pooled.shape)
        raise ValueError(f"AR sampler: needs a conditioning with a pooled [1, {cond_dim}] MiniLM sentence embedding "
                         f"(encode the prompt with the CLIP output of the AR loader), got pooled_output {got}")
    return pooled[:1].to(device=device, dtype=torch.float32).expand(batch, -1)
