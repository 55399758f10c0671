"""ControlNet (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion Models") for SD1.x /
SDXL UNets: single files in either layout, loaded into diffusers' ``ControlNetModel`` offline.

A ControlNet is a trainable copy of the UNet's encoder fed ``x_t + E(hint)``; its zero-initialised 1x1
convolutions give one residual per skip connection plus one for the middle block, which are added to the
frozen UNet's (Zhang et al. 2023, Sec. 3.2, eq. 2). Several ControlNets add their residuals up; each is
scaled by its strength.

Files: the LDM layout (``input_blocks.*``, ``zero_convs.*``, ``input_hint_block.*``, ``middle_block_out.*``,
optionally under ``control_model.``) goes through diffusers' own converter; the diffusers layout
(``controlnet_cond_embedding.*``) loads as is. "Difference" ControlNets (a ``difference`` key; the copied
UNet weights stored as ControlNet - UNet) get the model's UNet weights added back (DiffControlNetLoader). The architecture is read from the tensors' shapes (no
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
        param = next(self.model.parameters())
        image = _hint_batch(hint, x_in, param, 3)
        down, mid = self.model(x_in, t, encoder_hidden_states=context, controlnet_cond=image,
                               conditioning_scale=float(strength), added_cond_kwargs=added, return_dict=False)
        return list(down), mid


def _hint_batch(hint: torch.Tensor, x_in: torch.Tensor, param: torch.Tensor, channels: int) -> torch.Tensor:
    """IMAGE [B', H, W, 3] -> [B, channels, 8h, 8w] on the network (nearest, centre crop as ComfyUI; grey
    = the mean of RGB for one-channel networks), repeated over x_in's batch."""
    from fewstep.nodes.core.imaging import scale_images

    image = scale_images(hint.float().cpu(), "nearest-exact", x_in.shape[-1] * 8, x_in.shape[-2] * 8, "center")
    image = image[..., :3].permute(0, 3, 1, 2)                                   # [B', 3, H, W]
    if channels == 1:
        image = image.mean(dim=1, keepdim=True)
    if image.shape[0] != x_in.shape[0]:
        image = image.repeat(-(-x_in.shape[0] // image.shape[0]), 1, 1, 1)[:x_in.shape[0]]
    return image.to(param.device, param.dtype)


@dataclass(eq=False)
class T2IAdapter:
    """A T2I-Adapter (Mou et al. 2023, "T2I-Adapter", Sec. 3.2): a small convolutional network from the
    control image alone (no x_t, no timestep) whose multi-scale features F_c are added to the UNet
    encoder's features, F_enc + w F_c (eq. 2-3); the CONTROL_NET link value (diffusers ``T2IAdapter``)."""

    model: Any
    in_channels: int = 3
    name: str = ""

    def features(self, x_in: torch.Tensor, hint: torch.Tensor, strength: float) -> list[torch.Tensor]:
        param = next(self.model.parameters())
        return [f * float(strength) for f in self.model(_hint_batch(hint, x_in, param, self.in_channels))]


def unet_residual_kwargs(specs: list[Any], x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                         added: dict | None) -> dict[str, Any]:
    """The UNet keyword arguments for the active ControlNets / T2I-Adapters ``specs``
    (``conditioning.ControlSpec``): residuals of the same kind summed (Zhang et al. 2023, Sec. 3.4,
    "multiple conditions"); ControlNets feed the skip connections, adapters the encoder blocks."""
    down: list[torch.Tensor] | None = None
    mid: torch.Tensor | None = None
    adapter: list[torch.Tensor] | None = None
    for spec in specs:
        if isinstance(spec.net, T2IAdapter):
            f = spec.net.features(x_in, spec.hint, spec.strength)
            adapter = f if adapter is None else [a + b for a, b in zip(adapter, f, strict=True)]
            continue
        d, m = spec.net.residuals(x_in, t, context, added, spec.hint, spec.strength)
        down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
        mid = m if mid is None else mid + m
    kwargs: dict[str, Any] = {}
    if down is not None:
        kwargs.update(down_block_additional_residuals=down, mid_block_additional_residual=mid)
    if adapter is not None:   # a fresh list: the UNet pops from it
        kwargs["down_intrablock_additional_residuals"] = list(adapter)
    return kwargs


def t2i_to_diffusers_layout(state: dict[str, Any]) -> dict[str, Any] | None:
    """T2I-Adapter weights in diffusers names, or None when ``state`` is no (full) T2I-Adapter. The original
    TencentARC layout (``conv_in``, ``body.{2 l + r}.block1/block2``, ``body.{2 l}.in_conv``: two resnet blocks
    per level) maps onto diffusers' ``adapter.body.{l}.resnets.{r}`` / ``adapter.body.{l}.in_conv``."""
    if any(k.startswith("adapter.body.") for k in state):
        return state
    if "conv_in.weight" not in state or "body.0.block1.weight" not in state:
        return None
    out = {}
    for key, value in state.items():
        if m := re.match(r"body\.(\d+)\.(block1|block2)\.(weight|bias)$", key):
            level, r = divmod(int(m[1]), 2)
            out[f"adapter.body.{level}.resnets.{r}.{m[2]}.{m[3]}"] = value
        elif m := re.match(r"body\.(\d+)\.in_conv\.(weight|bias)$", key):
            out[f"adapter.body.{int(m[1]) // 2}.in_conv.{m[2]}"] = value
        elif key.startswith("conv_in."):
            out["adapter." + key] = value
        else:
            raise ValueError(f"unsupported T2I-Adapter layout (key {key!r}; only the full adapter is read)")
    return out


def t2i_light_to_diffusers_layout(state: dict[str, Any]) -> dict[str, Any] | None:
    """Light T2I-Adapter weights (TencentARC's ``Adapter_light``, which ComfyUI detects by
    ``body.0.in_conv.weight``: per level ``body.{l}.in_conv`` (1x1), ``body.{l}.body.{r}.block1/block2`` (resnet
    blocks at a quarter of the width), ``body.{l}.out_conv`` (1x1)) in diffusers' ``LightAdapter`` names
    (``adapter.body.{l}.in_conv``, ``adapter.body.{l}.resnets.{r}.*``, ``adapter.body.{l}.out_conv``); None when
    ``state`` is no light adapter."""
    if "adapter.body.0.out_conv.weight" in state:
        return state
    if "body.0.in_conv.weight" not in state or "body.0.out_conv.weight" not in state:
        return None
    out = {}
    for key, value in state.items():
        if m := re.match(r"body\.(\d+)\.body\.(\d+)\.(block1|block2)\.(weight|bias)$", key):
            out[f"adapter.body.{m[1]}.resnets.{m[2]}.{m[3]}.{m[4]}"] = value
        elif m := re.match(r"body\.(\d+)\.(in_conv|out_conv)\.(weight|bias)$", key):
            out[f"adapter.body.{m[1]}.{m[2]}.{m[3]}"] = value
        else:
            raise ValueError(f"unsupported light T2I-Adapter layout (key {key!r})")
    return out


def _light_adapter(sd: dict[str, Any]) -> tuple[Any, int]:
    """(diffusers LightAdapter-type T2IAdapter, control-image channels) for diffusers-layout light weights. Its
    last level keeps the width of the one before (diffusers' layout; ComfyUI's 320, 640, 1280, 1280 fits)."""
    from diffusers import T2IAdapter as DiffusersT2IAdapter

    levels = _count(sd, r"adapter\.body\.(\d+)\.")
    widths = [int(sd[f"adapter.body.{i}.out_conv.weight"].shape[0]) for i in range(levels)]
    if levels < 2 or widths[-1] != widths[-2]:
        raise ValueError(f"light T2I-Adapter with level widths {widths}: only adapters whose last two levels "
                         "have one width (as the published ones, 320 640 1280 1280) are supported")
    in_channels = int(sd["adapter.body.0.in_conv.weight"].shape[1]) // 64           # after an 8x pixel unshuffle
    net = DiffusersT2IAdapter(in_channels=in_channels, channels=widths[:-1],
                              num_res_blocks=_count(sd, r"adapter\.body\.0\.resnets\.(\d+)\."),
                              downscale_factor=8, adapter_type="light_adapter")
    return net, in_channels


def _load_t2i(sd: dict[str, Any], path: Path, dtype: Any, device: str) -> T2IAdapter:
    from diffusers import T2IAdapter as DiffusersT2IAdapter

    from fewstep.nodes.core.loaders.sd import _load_module

    if "adapter.body.0.out_conv.weight" in sd:
        light, in_channels = _light_adapter(sd)
        return T2IAdapter(_load_module(light, sd, "T2I-Adapter (light)", path, dtype, device), in_channels, path.name)
    levels = _count(sd, r"adapter\.body\.(\d+)\.")
    channels = [int(sd[f"adapter.body.{i}.resnets.0.block1.weight"].shape[0]) for i in range(levels)]
    unshuffled = int(sd["adapter.conv_in.weight"].shape[1])                  # in_channels * 8 * 8
    in_channels = unshuffled // 64
    net = DiffusersT2IAdapter(in_channels=in_channels, channels=channels,
                              num_res_blocks=_count(sd, r"adapter\.body\.0\.resnets\.(\d+)\."),
                              downscale_factor=8, adapter_type="full_adapter")
    return T2IAdapter(_load_module(net, sd, "T2I-Adapter", path, dtype, device), in_channels, path.name)


def add_base_weights(sd: dict[str, Any], unet: torch.nn.Module, path: Path) -> dict[str, Any]:
    """A "difference" ControlNet made whole: every weight it shares with the UNet (same diffusers name: the
    trainable copy's conv_in, time embedding, down and mid blocks) is stored as ControlNet - UNet, so the UNet's
    weight is added back (ComfyUI's diff loading, done in float32); the zero convolutions and the hint encoder,
    which the UNet lacks, are stored whole."""
    base = unet.state_dict()
    out = {}
    for key, value in sd.items():
        if key in base:
            if base[key].shape != value.shape:
                raise ValueError(f"{path.name}: difference weight {key} has shape {tuple(value.shape)}, the model's "
                                 f"is {tuple(base[key].shape)}: this diff ControlNet was made for another model")
            value = (value.float() + base[key].detach().float().cpu()).to(value.dtype)
        out[key] = value
    return out


def load_controlnet(path: Path, *, allow_pickle: bool | None = None,
                    base_unet: torch.nn.Module | None = None) -> ControlNet | T2IAdapter:
    """A ControlNet (LDM or diffusers layout) or T2I-Adapter (full or light) single file, on the device the
    checkpoints use. ``base_unet``: the model's UNet, needed by "difference" ControlNets (a ``difference`` key
    marks them; ComfyUI's DiffControlNetLoader); ignored for full files."""
    from diffusers import ControlNetModel

    from fewstep.nodes.core.loaders import pick_device
    from fewstep.nodes.core.loaders.files import cached, read_state_dict
    from fewstep.nodes.core.loaders.sd import _load_module

    device, dtype = pick_device()

    def load() -> ControlNet | T2IAdapter:
        state = read_state_dict(path, allow_pickle=allow_pickle)
        adapter = t2i_to_diffusers_layout(state)
        if adapter is None:
            adapter = t2i_light_to_diffusers_layout(state)
        if adapter is not None:
            return _load_t2i(adapter, path, dtype, device)
        difference = state.pop("difference", None) is not None
        if difference and base_unet is None:
            raise ValueError(f"{path.name} is a difference ControlNet (weights stored relative to a UNet): load "
                             "it with DiffControlNetLoader, which adds the model's weights")
        sd = to_diffusers_layout(state)
        if difference:
            sd = add_base_weights(sd, base_unet, path)
        net = _load_module(lambda: ControlNetModel(**controlnet_config(sd)), sd, "ControlNet", path, dtype, device)
        return ControlNet(net, path.name)

    # a diff file becomes a different network on every base model: the base joins the cache key
    key_dtype = dtype if base_unet is None else f"{dtype}+base{id(base_unet)}"
    return cached(path, key_dtype, device, load)


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
