"""A MODEL's network for MixDQ: find the nn.Module inside a MODEL wrapper, swap it, and run the graph's
sampler on a network (the calibration runner). Torch lives here so that listing the nodes stays cheap."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn


def _wrapped_unet(model_fn: Any) -> nn.Module | None:
    """The nn.Module inside a core loader's ``UNetFn(unet)`` (a plain callable around a diffusers UNet)."""
    inner = getattr(model_fn, "unet", None)
    return inner if not isinstance(model_fn, nn.Module) and isinstance(inner, nn.Module) else None


def network_of(model: Any) -> nn.Module:
    """The MODEL's network as an nn.Module (``model_fn``, or the UNet a ``UNetFn`` wraps), or a clear error."""
    net = getattr(model, "model_fn", None)
    inner = _wrapped_unet(net)
    net = inner if inner is not None else net   # not `or`: an empty nn.Sequential is falsy
    if not isinstance(net, nn.Module):
        raise TypeError(f"MixDQ needs a MODEL whose network (model_fn) is a torch.nn.Module; got {type(net).__name__}")
    return net


def with_network(model: Any, net: nn.Module, **extras: Any) -> Any:
    """A clone of the MODEL wrapper running ``net`` (extras merged in); a ``UNetFn`` keeps wrapping it."""
    model_fn = model.model_fn
    if _wrapped_unet(model_fn) is not None:
        model_fn = dataclasses.replace(model_fn, unet=net)
    else:
        model_fn = net
    return model.clone(model_fn=model_fn, extras={**model.extras, **extras})


def make_runner(model: Any, guider: Any, sampler: Any, sigmas: torch.Tensor, latent: dict, seed: int):
    """runner(net) -> final latents of ``sampler`` with ``guider``'s denoiser swapped for one running net."""
    if hasattr(guider, "build"):   # a core GUIDER link is a spec, built into a guider per latent shape
        guider = guider.build(latent["samples"])
    if not hasattr(guider, "denoiser"):
        raise TypeError("MixDQCalibrate: the GUIDER must expose the denoiser it wraps (.denoiser)")
    shape = tuple(latent["samples"].shape)

    @torch.no_grad()
    def runner(net: nn.Module) -> torch.Tensor:
        g = copy.copy(guider)
        g.denoiser = with_network(model, net)
        device = next(net.parameters()).device
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        x = torch.randn(shape, generator=gen).to(device) * sigmas[0].to(device)
        return sampler(g, x, sigmas.to(device), cond=None, generator=torch.Generator(device="cpu").manual_seed(int(seed)))
    return runner
