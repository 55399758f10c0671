"""``comfy.model_management`` for classic custom packs: devices, interrupts, cache emptying.

ComfyUI's version manages VRAM with process globals; fewstep's model cache is an object of the running
app, so only the queries and the interrupt protocol packs call are here. The interrupt flag is the running
job's (``app.api.current_context()``): ``InterruptProcessingException`` is the engine's interrupt, so a job
stopped inside a pack ends as ``execution_interrupted``.
"""

from __future__ import annotations

from typing import Any

from fewstep.app.api import InterruptedError_, current_context


class InterruptProcessingException(InterruptedError_):
    """Raised when the running job was interrupted (the executor reports ``execution_interrupted``)."""


def _torch() -> Any:
    import torch  # packs that ask for devices use torch anyway; the engine does not import it

    return torch


def get_torch_device() -> Any:
    torch = _torch()
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def intermediate_device() -> Any:
    return _torch().device("cpu")


def unet_offload_device() -> Any:
    return _torch().device("cpu")


def text_encoder_device() -> Any:
    return get_torch_device()


def vae_device() -> Any:
    return get_torch_device()


def processing_interrupted() -> bool:
    """True if the job this node runs for was interrupted (False outside a job)."""
    context = current_context()
    return context is not None and context.is_interrupted()


def throw_exception_if_processing_interrupted() -> None:
    if processing_interrupted():
        context = current_context()
        raise InterruptProcessingException(f"interrupted in node {context.node_id} ({context.class_type})")


def soft_empty_cache(force: bool = False) -> None:
    """Return cached CUDA blocks to the driver (no-op without CUDA)."""
    torch = _torch()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
