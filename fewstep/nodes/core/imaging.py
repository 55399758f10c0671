"""Image resizing for ImageScale (IMAGE tensors [B, H, W, C] in 0..1)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def _center_crop(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [B,H,W,C] to the target aspect ratio around the centre (ComfyUI's crop='center')."""
    _, h, w, _ = images.shape
    target, current = width / height, w / h
    if current > target:                                   # too wide: trim columns
        new_w = round(h * target)
        x0 = (w - new_w) // 2
        return images[:, :, x0:x0 + new_w]
    new_h = round(w / target)
    y0 = (h - new_h) // 2
    return images[:, y0:y0 + new_h]


def scale_images(images: torch.Tensor, method: str, width: int, height: int, crop: str) -> Any:
    """Resize to width x height; 0 in one of them keeps the aspect ratio; both 0 returns the input."""
    _, h, w, _ = images.shape
    if width == 0 and height == 0:
        return images
    width = width or max(1, round(w * height / h))
    height = height or max(1, round(h * width / w))
    if crop == "center":
        images = _center_crop(images, width, height)
    x = images.permute(0, 3, 1, 2)                          # [B,C,H,W]
    if method == "lanczos":
        import numpy as np
        from PIL import Image

        arrays = [np.asarray(Image.fromarray((img.clamp(0, 1) * 255).byte().cpu().numpy()).resize(
            (width, height), Image.LANCZOS), dtype=np.float32) / 255.0 for img in images]
        return torch.from_numpy(np.stack(arrays))
    mode = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic"}[method]
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(x, size=(height, width), mode=mode, **kwargs)
    return out.clamp(0, 1).permute(0, 2, 3, 1)
