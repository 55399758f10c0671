"""ControlNet (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion Models") for SD1.x /
SDXL UNets: single files in either layout, loaded into diffusers' ``ControlNetModel`` offline.

A ControlNet is a trainable copy of the UNet's encoder fed ``x_t + E(hint)``; its zero-initialised 1x1
convolutions give one residual per skip connection plus one for the middle block, which are added to the
frozen UNet's (Zhang et al. 2023, Sec. 3.2, eq. 2). Several ControlNets add their residuals up; each is
scaled by its strength.

Files: the LDM layout (``input_blocks.*``, ``zero_convs.*``, ``input_hint_block.*``, ``middle_block_out.*``,
optionally under ``control_model.``) goes through diffusers' own converter; the diffusers layout
(``controlnet_cond_embedding.*``) loads as is. The architecture is read from the tensors' shapes (no
config download), so full-size and tiny test networks load alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


def _count(state: dict[str, Any], pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def to_diffusers_layout(state: dict[str, Any]) -> dict[str, Any]:
    """LDM-layout ControlNet weights (with or without ``control_model.``) -> diffusers names."""
    if "controlnet_cond_embedding.conv_in.weight" in state:
        return state
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    from fewstep.nodes.core.loaders import ldm_keys as K

    ldm = {k.removeprefix("control_model."): v for k, v in state.items()}
    if "input_hint_block.0.weight" not in ldm:
        raise ValueError("not a ControlNet: no input_hint_block / controlnet_cond_embedding weights")
    _, per_level = K.unet_levels(ldm)
    return convert_controlnet_checkpoint(ldm, {"layers_per_block": per_level})


def controlnet_config(sd: dict[str, Any]) -> dict[str, Any]:
    """diffusers ``ControlNetModel`` arguments read from diffusers-layout weights."""
    levels = _count(sd, r"down_blocks\.(\d+)\.")
    widths = [int(sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(levels)]
    attn = [f"down_blocks.{i}.attentions.0.proj_in.weight" in sd for i in range(levels)]
    depth = [_count(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") if a else 1
             for i, a in enumerate(attn)]
    embed = [int(sd["controlnet_cond_embedding.conv_in.weight"].shape[0])]
    embed += [int(sd[f"controlnet_cond_embedding.blocks.{2 * j + 1}.weight"].shape[0])
              for j in range(_count(sd, r"controlnet_cond_embedding\.blocks\.(\d+)\.") // 2)]
    sdxl = "add_embedding.linear_1.weight" in sd
    cfg: dict[str, Any] = dict(
        in_channels=int(sd["conv_in.weight"].shape[1]), block_out_channels=widths,
        layers_per_block=_count(sd, r"down_blocks\.0\.resnets\.(\d+)\."),
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        cross_attention_dim=int(next(v for k, v in sd.items() if k.endswith("attn2.to_k.weight")).shape[1]),
        use_linear_projection=next(v for k, v in sd.items() if k.endswith("proj_in.weight")).ndim == 2,
        transformer_layers_per_block=depth, conditioning_embedding_out_channels=embed,
        conditioning_channels=int(sd["controlnet_cond_embedding.conv_in.weight"].shape[1]),
        # SD1.x counts 8 heads per attention; SDXL uses 64-channel heads
        attention_head_dim=[max(1, w // 64) for w in widths] if sdxl else 8)
    if sdxl:
        cfg.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                   projection_class_embeddings_input_dim=int(sd["add_embedding.linear_1.weight"].shape[1]))
    return cfg


@dataclass(eq=False)
class ControlNet:
    """The CONTROL_NET link value: a diffusers ``ControlNetModel`` (eval, on its device and dtype)."""

    model: Any
    name: str = ""

    def residuals(self, x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor, added: dict | None,
                  hint: torch.Tensor, strength: float) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(down residuals, mid residual) for the UNet input ``x_in`` [B, C, h, w] (already on the model's
        device and dtype); ``hint`` [B', H, W, 3] in 0..1 is resized to 8h x 8w (nearest, centre crop
        as ComfyUI) and repeated over the batch."""
        from fewstep.nodes.core.imaging import scale_images

        param = next(self.model.parameters())
        image = scale_images(hint.float().cpu(), "nearest-exact", x_in.shape[-1] * 8, x_in.shape[-2] * 8, "center")
        image = image.permute(0, 3, 1, 2).to(param.device, param.dtype)          # [B', 3, H, W]
        if image.shape[0] != x_in.shape[0]:
            image = image.repeat(-(-x_in.shape[0] // image.shape[0]), 1, 1, 1)[:x_in.shape[0]]
        down, mid = self.model(x_in, t, encoder_hidden_states=context, controlnet_cond=image,
                               conditioning_scale=float(strength), added_cond_kwargs=added, return_dict=False)
        return list(down), mid


def unet_residual_kwargs(specs: list[Any], x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                         added: dict | None) -> dict[str, Any]:
    """The UNet keyword arguments for the active ControlNets ``specs`` (``conditioning.ControlSpec``):
    their residuals summed (Zhang et al. 2023, Sec. 3.4, "multiple conditions")."""
    down: list[torch.Tensor] | None = None
    mid: torch.Tensor | None = None
    for spec in specs:
        d, m = spec.net.residuals(x_in, t, context, added, spec.hint, spec.strength)
        down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
        mid = m if mid is None else mid + m
    if down is None:
        return {}
    return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def load_controlnet(path: Path, *, allow_pickle: bool | None = None) -> ControlNet:
    """A ControlNet single file (LDM or diffusers layout), on the device the checkpoints use."""
    from diffusers import ControlNetModel

    from fewstep.nodes.core.loaders import pick_device
    from fewstep.nodes.core.loaders.files import cached, read_state_dict
    from fewstep.nodes.core.loaders.sd import _load_module

    device, dtype = pick_device()

    def load() -> ControlNet:
        sd = to_diffusers_layout(read_state_dict(path, allow_pickle=allow_pickle))
        net = _load_module(ControlNetModel(**controlnet_config(sd)), sd, "ControlNet", path, dtype, device)
        return ControlNet(net, path.name)

    return cached(path, dtype, device, load)


# -- Canny edges (the ``Canny`` node; Canny 1986), in torch ---------------------------------------------


def _gaussian_blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    radius = max(1, round(2 * sigma))
    k = torch.exp(-torch.arange(-radius, radius + 1, dtype=x.dtype) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.reshape(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.reshape(1, 1, -1, 1))


def canny(images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Edge map [B, H, W] in {0, 1} of IMAGE [B, H, W, C]: grey -> Gaussian blur (sigma 1, 5x5) -> Sobel
    gradients -> non-maximum suppression along the gradient direction (4 sectors) -> hysteresis: pixels
    above ``high`` are edges, pixels above ``low`` are edges when 8-connected to one (iterated to a fixed
    point). Thresholds are on the gradient magnitude of 0..1 intensities, as kornia's (ComfyUI's) canny."""
    grey = (images[..., :3].float() * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    x = _gaussian_blur(grey.permute(0, 3, 1, 2))                                   # [B, 1, H, W]
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sobel.reshape(1, 1, 3, 3))
    gy = F.conv2d(padded, sobel.t().reshape(1, 1, 3, 3))
    mag = (gx**2 + gy**2 + 1e-12).sqrt()
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0
    sector = ((angle + 22.5) // 45).long() % 4                                      # 0:-, 1:/, 2:|, 3:\
    offsets = ((0, 1), (1, 1), (1, 0), (1, -1))                                     # (dy, dx) per sector
    mp = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape[-2:]
    keep = torch.zeros_like(mag, dtype=torch.bool)
    for s, (dy, dx) in enumerate(offsets):
        ahead = mp[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        behind = mp[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]
        keep |= (sector == s) & (mag >= ahead) & (mag >= behind)
    mag = mag * keep
    strong, weak = mag > high, mag > low
    edges = strong
    while True:
        grown = F.max_pool2d(edges.float(), 3, stride=1, padding=1).bool() & weak
        if torch.equal(grown, edges):
            return edges[:, 0].float()
        edges = grown
