"""Latent-space operations behind the latent nodes (``nodes_latent``): resizing (incl. bislerp), the
inpainting encoders' pixel masking and mask growth."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def _slerp_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Resize ``x`` [B, C, h, w] along ``dim`` (2 or 3) by spherical interpolation of the channel vectors
    between the two nearest source cells (align_corners=False sampling): directions are slerped, norms
    lerped. Slerp(a, b; t) = (sin((1-t) W) a + sin(t W) b) / sin W, W the angle between a and b."""
    n = x.shape[dim]
    pos = ((torch.arange(size, dtype=torch.float64) + 0.5) * n / size - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(n - 1)
    t = (pos - lo.double()).float()
    a, b = x.index_select(dim, lo), x.index_select(dim, hi)
    shape = [1, 1, 1, 1]
    shape[dim] = size
    t = t.reshape(shape)
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)
    omega = (ua * ub).sum(1, keepdim=True).clamp(-1, 1).acos()
    so = omega.sin()
    linear = so.abs() < 1e-4                               # (anti)parallel vectors: plain lerp
    wa = torch.where(linear, 1 - t, ((1 - t) * omega).sin() / so.where(~linear, torch.ones_like(so)))
    wb = torch.where(linear, t, (t * omega).sin() / so.where(~linear, torch.ones_like(so)))
    return (wa * ua + wb * ub) * ((1 - t) * na + t * nb)


def scale_latent(samples: torch.Tensor, method: str, width: int, height: int, crop: str) -> torch.Tensor:
    """Resize latents [B, C, h, w] to height x width cells, centre-cropping to the new aspect first when
    ``crop == "center"`` (ComfyUI's ``common_upscale``)."""
    if crop == "center":
        h, w = samples.shape[-2:]
        target, current = width / height, w / h
        if current > target:
            new_w = round(h * target)
            samples = samples[..., (w - new_w) // 2:(w - new_w) // 2 + new_w]
        elif current < target:
            new_h = round(w / target)
            samples = samples[..., (h - new_h) // 2:(h - new_h) // 2 + new_h, :]
    if method == "bislerp":
        return _slerp_axis(_slerp_axis(samples.float(), width, 3), height, 2)
    kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    return F.interpolate(samples.float(), size=(height, width), mode=method, **kwargs)


def crop_to_multiple(pixels: torch.Tensor, multiple: int = 8) -> tuple[torch.Tensor, slice, slice]:
    """Centre-crop IMAGE [B, H, W, C] to multiples of 8 (the VAE's downscale), as ComfyUI's encoders."""
    h, w = (pixels.shape[1] // multiple) * multiple, (pixels.shape[2] // multiple) * multiple
    ys, xs = slice((pixels.shape[1] % multiple) // 2, (pixels.shape[1] % multiple) // 2 + h), \
        slice((pixels.shape[2] % multiple) // 2, (pixels.shape[2] % multiple) // 2 + w)
    return pixels[:, ys, xs], ys, xs


def _grow(mask: torch.Tensor, grow_mask_by: int) -> torch.Tensor:
    """Dilate a {0,1} mask [B, 1, H, W] with a grow x grow box (ComfyUI's mask erosion step)."""
    if grow_mask_by == 0:
        return mask
    kernel = torch.ones(1, 1, grow_mask_by, grow_mask_by)
    padding = math.ceil((grow_mask_by - 1) / 2)
    return F.conv2d(mask.round(), kernel, padding=padding).clamp(0, 1)


def encode_for_inpaint(vae: Any, pixels: torch.Tensor, mask: torch.Tensor, grow_mask_by: int) -> dict[str, Any]:
    """VAEEncodeForInpaint: the masked pixels set to grey 0.5 before encoding (so the model cannot copy
    them), and the mask, grown by a few pixels for seamless edges, as the noise mask."""
    mask = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=pixels.shape[1:3], mode="bilinear")
    pixels, ys, xs = crop_to_multiple(pixels.clone())
    mask = mask[:, :, ys, xs]
    keep = (1.0 - mask.round())[:, 0, :, :, None]                    # [B, H, W, 1]
    pixels = (pixels[..., :3] - 0.5) * keep + 0.5
    grown = _grow(mask, grow_mask_by)[:, :, :pixels.shape[1], :pixels.shape[2]].round()
    return {"samples": vae.encode(pixels), "noise_mask": grown}
