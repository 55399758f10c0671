"""Image operations behind the image nodes (``nodes_image``): outpainting pads, batch matching, tiled
model upscaling and the text PreviewAny shows. IMAGE is [B, H, W, C] in 0..1, MASK [B, H, W]."""

from __future__ import annotations

import json
from typing import Any

import torch


def pad_for_outpaint(image: torch.Tensor, left: int, top: int, right: int, bottom: int,
                     feathering: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey (0.5) border around the image and the mask of what to generate: 1 on the border; inside, within
    ``feathering`` pixels of a padded side, it falls off as ((f - d) / f)^2 with d the distance to that side."""
    b, h, w, c = image.shape
    out = torch.full((b, h + top + bottom, w + left + right, c), 0.5)
    out[:, top:top + h, left:left + w] = image
    mask = torch.ones(h + top + bottom, w + left + right)
    inner = torch.zeros(h, w)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        ys = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
        xs = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
        big = torch.full((h, w), float(max(h, w)))
        d = torch.stack([ys if top else big, (h - 1 - ys) if bottom else big,
                         xs if left else big, (w - 1 - xs) if right else big]).amin(0)
        inner = torch.where(d < feathering, ((feathering - d) / feathering) ** 2, inner)
    mask[top:top + h, left:left + w] = inner
    return out, mask[None]


def match_batch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``b`` resized (bilinear, centre crop) to ``a``'s height and width, so the two can be concatenated."""
    from fewstep.nodes.core.imaging import scale_images

    if a.shape[1:3] == b.shape[1:3]:
        return b
    return scale_images(b, "bilinear", a.shape[2], a.shape[1], "center")


def upscale_tiled(model: Any, image: torch.Tensor, tile: int = 512, overlap: int = 32) -> torch.Tensor:
    """Run an upscale model over IMAGE [B, H, W, C] in overlapping tiles (bounded memory; ComfyUI's
    tile 512 / overlap 32) and average the overlaps; returns [B, sH, sW, C] in 0..1."""
    scale = int(model.scale)
    param = next(model.model.parameters())
    x = image[..., :3].permute(0, 3, 1, 2).float()                                   # [B, 3, H, W]
    b, _, h, w = x.shape
    out = torch.zeros(b, 3, h * scale, w * scale)
    weight = torch.zeros(1, 1, h * scale, w * scale)
    step = max(1, tile - overlap)
    with torch.no_grad():
        for y0 in range(0, max(1, h - overlap), step):
            for x0 in range(0, max(1, w - overlap), step):
                y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
                ys, xs = max(0, y1 - tile), max(0, x1 - tile)
                patch = model(x[:, :, ys:y1, xs:x1].to(param.device, param.dtype)).float().cpu()
                out[:, :, ys * scale:y1 * scale, xs * scale:x1 * scale] += patch
                weight[:, :, ys * scale:y1 * scale, xs * scale:x1 * scale] += 1
    return (out / weight).clamp(0, 1).permute(0, 2, 3, 1)


def preview_text(value: Any) -> str:
    """What PreviewAny shows: strings as they are, numbers / booleans / JSON-able values as JSON, tensors by
    shape and dtype, anything else by its str()."""
    if isinstance(value, str):
        return value
    if isinstance(value, torch.Tensor):
        return f"tensor {list(value.shape)} {value.dtype}"
    try:
        return json.dumps(value, indent=4)
    except (TypeError, ValueError):
        return str(value)
