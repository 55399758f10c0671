"""Original (LDM / "single-file") key layout -> diffusers / transformers module names.

Written from the structure of the two module trees (ldm ``openaimodel.UNetModel`` / ``AutoencoderKL`` /
``FrozenCLIPEmbedder`` / ``FrozenOpenCLIPEmbedder2`` against diffusers ``UNet2DConditionModel`` /
``AutoencoderKL`` and transformers ``CLIPTextModel``). Every function takes the sub-dict of one component
(prefix already stripped) and returns a new dict; unknown keys raise, so a wrong guess cannot pass silently.
"""

from __future__ import annotations

import re
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIXES = ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.")
OPENCLIP_PREFIX = "conditioner.embedders.1.model."

RESNET_UNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
               "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
RESNET_VAE = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
              "nin_shortcut": "conv_shortcut"}
VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def split_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The entries under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _rename(rest: str, table: dict[str, str], where: str) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    raise KeyError(f"unexpected key {where}.{rest}")


# ----------------------------------------------------------------------------------- UNet


def unet_levels(state: dict[str, Any]) -> tuple[int, int]:
    """(number of resolution levels, resnets per down level) read from the input_blocks layout:
    input block 0 is conv_in, then each level has L resnet(+attention) blocks and, except the last, one
    downsampler (``input_blocks.i.0.op``)."""
    ops = sorted(int(m.group(1)) for k in state if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.weight$", k)))
    if not ops:
        raise KeyError("no downsampler (input_blocks.*.0.op) in the UNet weights")
    per_level = ops[0] - 1
    return len(ops) + 1, per_level


def _unet_block_key(kind: str, index: int, rest: str, levels: int, per_level: int) -> str:
    """Map ``input_blocks.i.k.<rest>`` / ``output_blocks.i.k.<rest>`` to diffusers names."""
    module, _, tail = rest.partition(".")
    k = int(module)
    if kind == "input":
        level, j = divmod(index - 1, per_level + 1)
        if j == per_level:                                   # the downsampler of this level
            return f"down_blocks.{level}.downsamplers.0.conv.{tail.removeprefix('op.')}"
        if k == 0:
            return f"down_blocks.{level}.resnets.{j}." + _rename(tail, RESNET_UNET, f"input_blocks.{index}.0")
        return f"down_blocks.{level}.attentions.{j}.{tail}"
    level, j = divmod(index, per_level + 1)                  # up levels have L + 1 resnets
    if k == 0:
        return f"up_blocks.{level}.resnets.{j}." + _rename(tail, RESNET_UNET, f"output_blocks.{index}.0")
    if tail.startswith("conv."):                             # Upsample (module 1 or 2)
        return f"up_blocks.{level}.upsamplers.0.{tail}"
    return f"up_blocks.{level}.attentions.{j}.{tail}"


def _unet_simple_key(key: str) -> str | None:
    fixed = {"time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
             "label_emb.0.0.": "add_embedding.linear_1.", "label_emb.0.2.": "add_embedding.linear_2.",
             "input_blocks.0.0.": "conv_in.", "out.0.": "conv_norm_out.", "out.2.": "conv_out.",
             "middle_block.0.": "mid_block.resnets.0.", "middle_block.1.": "mid_block.attentions.0.",
             "middle_block.2.": "mid_block.resnets.1."}
    for old, new in fixed.items():
        if key.startswith(old):
            tail = key[len(old):]
            if old in ("middle_block.0.", "middle_block.2."):
                tail = _rename(tail, RESNET_UNET, old.rstrip("."))
            return new + tail
    return None


def convert_unet(state: dict[str, Any]) -> dict[str, Any]:
    """LDM UNet (``model.diffusion_model.*`` with the prefix stripped) -> diffusers UNet2DConditionModel."""
    levels, per_level = unet_levels(state)
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = _unet_simple_key(key)
        if new is None:
            m = re.match(r"(input|output)_blocks\.(\d+)\.(.+)$", key)
            if m is None:
                raise KeyError(f"unexpected UNet key {key!r}")
            new = _unet_block_key(m.group(1), int(m.group(2)), m.group(3), levels, per_level)
        out[new] = value
    return out


# ----------------------------------------------------------------------------------- VAE


def _vae_key(key: str, up_levels: int) -> str:
    for side in ("encoder", "decoder"):
        if not key.startswith(side + "."):
            continue
        rest = key[len(side) + 1:]
        if m := re.match(r"(down|up)\.(\d+)\.(block|downsample|upsample)\.(.+)$", rest):
            direction, level, part, tail = m.group(1), int(m.group(2)), m.group(3), m.group(4)
            if direction == "up":
                level = up_levels - 1 - level                    # LDM counts decoder levels bottom-up
            blocks = f"{side}.{direction}_blocks.{level}"
            if part == "block":
                j, _, inner = tail.partition(".")
                return f"{blocks}.resnets.{j}." + _rename(inner, RESNET_VAE, key)
            return f"{blocks}.{part}rs.0.{tail}"                 # downsamplers.0.conv / upsamplers.0.conv
        if m := re.match(r"mid\.(block_1|block_2|attn_1)\.(.+)$", rest):
            part, tail = m.group(1), m.group(2)
            if part == "attn_1":
                return f"{side}.mid_block.attentions.0." + _rename(tail, VAE_ATTN, key)
            index = 0 if part == "block_1" else 1
            return f"{side}.mid_block.resnets.{index}." + _rename(tail, RESNET_VAE, key)
        if rest.startswith("norm_out."):
            return f"{side}.conv_norm_out.{rest[len('norm_out.'):]}"
        if rest.startswith(("conv_in.", "conv_out.")):
            return key
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    raise KeyError(f"unexpected VAE key {key!r}")


def convert_vae(state: dict[str, Any]) -> dict[str, Any]:
    """LDM AutoencoderKL (``first_stage_model.*`` stripped) -> diffusers AutoencoderKL. The mid-block
    attention's 1x1 convs become linear layers ([C, C, 1, 1] -> [C, C])."""
    up_levels = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"decoder\.up\.(\d+)\.", k)))
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = _vae_key(key, up_levels)
        if ".attentions.0.to_" in new and new.endswith(".weight") and value.ndim == 4:
            value = value[:, :, 0, 0]
        out[new] = value
    return out


# ----------------------------------------------------------------------------------- text encoders


def convert_clip_l(state: dict[str, Any]) -> dict[str, Any]:
    """OpenAI CLIP text model as stored by LDM (transformers names, sometimes without ``text_model.``)."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue                                          # a buffer, rebuilt by transformers
        out[key if key.startswith("text_model.") else "text_model." + key] = value
    return out


def convert_open_clip(state: dict[str, Any]) -> dict[str, Any]:
    """open_clip text tower (SDXL's second encoder) -> transformers CLIPTextModelWithProjection.

    ``attn.in_proj_weight`` [3D, D] holds q, k, v stacked; ``text_projection`` [D, P] is applied as
    x @ P, i.e. a Linear with weight P^T."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if m := re.match(r"transformer\.resblocks\.(\d+)\.(.+)$", key):
            layer, tail = f"text_model.encoder.layers.{m.group(1)}", m.group(2)
            if tail.startswith("attn.in_proj_"):
                kind = tail.rsplit("_", 1)[1]                 # weight | bias
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                    out[f"{layer}.self_attn.{name}.{kind}"] = part
                continue
            table = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
                     "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
            out[f"{layer}." + _rename(tail, table, key)] = value
        elif key == "token_embedding.weight":
            out["text_model.embeddings.token_embedding.weight"] = value
        elif key == "positional_embedding":
            out["text_model.embeddings.position_embedding.weight"] = value
        elif key.startswith("ln_final."):
            out["text_model.final_layer_norm." + key[len("ln_final."):]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif key in ("logit_scale",) or key.startswith("attn_mask"):
            continue
        else:
            raise KeyError(f"unexpected open_clip key {key!r}")
    return out
