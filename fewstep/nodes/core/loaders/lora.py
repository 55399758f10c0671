"""LoRA files onto UNets and text encoders (Hu et al. 2022, LoRA: W' = W + strength * (alpha / r) * B A).

Key styles read:
- kohya (sd-scripts): ``lora_unet_<module path with _>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``,
  text encoders ``lora_te_`` (SD1) or ``lora_te1_`` / ``lora_te2_`` (SDXL), module paths in diffusers /
  transformers naming;
- diffusers / peft: ``unet.<module>.lora_A.weight`` / ``lora_B.weight`` (also ``lora.down`` / ``lora.up``),
  ``text_encoder.`` / ``text_encoder_2.`` prefixes.

Weights are never modified for good: a model carries a list of :class:`Patch` and the sampler / encoder
applies them inside :func:`applied`, which restores the exact original tensors afterwards (the loaded
model is shared through the model cache).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "te0", "lora_te1_": "te0", "lora_te2_": "te1"}
DIFFUSERS_PREFIXES = {"unet.": "unet", "text_encoder.": "te0", "text_encoder_2.": "te1", "transformer.": "unet"}


@dataclass(frozen=True)
class Patch:
    """A low-rank delta for one Linear/Conv weight: ``strength * scale * up @ down``."""

    module: torch.nn.Module
    up: torch.Tensor      # [out, r] (conv: [out, r, 1, 1])
    down: torch.Tensor    # [r, in] (conv: [r, in, kh, kw])
    scale: float          # alpha / r
    strength: float

    def delta(self) -> torch.Tensor:
        weight = self.module.weight
        up, down = self.up.to(weight.device, torch.float32), self.down.to(weight.device, torch.float32)
        if weight.ndim == 4:                                          # conv: [out,r,1,1] x [r,in,kh,kw]
            d = torch.einsum("or,rikl->oikl", up.flatten(1), down)
        else:
            d = up @ down                                             # [out, in]
        return (self.strength * self.scale * d).reshape(weight.shape)


@contextlib.contextmanager
def applied(patches: list[Patch]) -> Iterator[None]:
    """Add every patch's delta to its weight inside the block; restore the saved originals after."""
    saved: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
    try:
        with torch.no_grad():
            for patch in patches:
                weight = patch.module.weight
                saved.setdefault(id(weight), (weight, weight.detach().clone()))
                weight.add_(patch.delta().to(weight.dtype))
        yield
    finally:
        with torch.no_grad():
            for weight, original in saved.values():
                weight.copy_(original)


def _group(state: dict[str, torch.Tensor]) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    """{(target, module path with '.' or '_'): {"up", "down", "alpha"?}} from either key style."""
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    pattern = re.compile(r"^(.*?)\.(lora_down|lora_up|lora_A|lora_B|lora\.down|lora\.up)\.weight$|^(.*?)\.alpha$")
    for key, value in state.items():
        m = pattern.match(key)
        if m is None:
            continue
        name = m.group(1) or m.group(3)
        part = {"lora_down": "down", "lora_A": "down", "lora.down": "down",
                "lora_up": "up", "lora_B": "up", "lora.up": "up"}.get(m.group(2) or "", "alpha")
        target = _target_of(name)
        if target is not None:
            groups.setdefault(target, {})[part] = value
    return groups


def _target_of(name: str) -> tuple[str, str] | None:
    for prefix, target in {**KOHYA_PREFIXES, **DIFFUSERS_PREFIXES}.items():
        if name.startswith(prefix):
            return target, name[len(prefix):]
    return None


def _module_index(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Module lookup by dotted name and by kohya's underscore form. LoRA files name CLIP modules under
    ``text_model.``, which transformers 5's CLIPTextModel no longer has: both spellings are indexed."""
    index: dict[str, torch.nn.Module] = {}
    for path, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            for name in {path, "text_model." + path.removeprefix("text_model.")}:
                index[name] = module
                index[name.replace(".", "_")] = module
    return index


def lora_patches(state: dict[str, torch.Tensor], models: dict[str, torch.nn.Module],
                 strengths: dict[str, float], source: str = "LoRA") -> tuple[list[Patch], dict[str, int]]:
    """Patches for the targets present in ``models`` (``unet``, ``te0``, ``te1``).

    Returns the patches and the number matched per target. A LoRA module whose target is present but not
    found is an error naming it (a LoRA for another architecture)."""
    indexes = {target: _module_index(model) for target, model in models.items()}
    patches: list[Patch] = []
    matched: dict[str, int] = {}
    for (target, path), parts in _group(state).items():
        if target not in models or strengths.get(target, 0.0) == 0.0:
            continue
        if "up" not in parts or "down" not in parts:
            raise ValueError(f"{source}: module {path!r} lacks its up or down matrix")
        module = indexes[target].get(path) or indexes[target].get(path.replace(".", "_"))
        if module is None:
            raise ValueError(f"{source}: no module {path!r} in the {target} model (LoRA for another architecture?)")
        rank = parts["down"].shape[0]
        alpha = float(parts["alpha"]) if "alpha" in parts else float(rank)
        patches.append(Patch(module, parts["up"], parts["down"], alpha / rank, strengths[target]))
        matched[target] = matched.get(target, 0) + 1
    return patches, matched
