"""ComfyUI's conditioning nodes: clip skip, area composition, combining / averaging / concatenating prompts,
timestep ranges, masks and ControlNets.

Names, inputs, defaults, ranges and outputs follow ComfyUI's ``nodes.py``. The conditioning list format and
how samplers evaluate areas, masks and ranges: ``nodes.core.conditioning``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from fewstep.app.api import Combo, Float, Int, Link, Node, NodeOutput, Output, Schema, current_paths
from fewstep.nodes.core.names import MAX_RESOLUTION

if TYPE_CHECKING:
    import torch

Conditioning = list[list[Any]]


def _with(conditioning: Conditioning, **extra: Any) -> Conditioning:
    """A copy of every entry with keys added to its extra dict (the tensors are shared)."""
    return [[states, {**options, **extra}] for states, options in conditioning]


def _cond_out() -> list[Output]:
    return [Output("CONDITIONING", "CONDITIONING")]


class CLIPSetLastLayer(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="CLIPSetLastLayer", display_name="CLIP Set Last Layer", category="conditioning",
                      inputs=[Link("clip", "CLIP"), Int("stop_at_clip_layer", -1, min=-24, max=-1, step=1)],
                      outputs=[Output("CLIP", "CLIP")])

    @classmethod
    def execute(cls, clip: Any, stop_at_clip_layer: int) -> NodeOutput:
        # "clip skip": -1 = the last layer, -2 = the penultimate ... (text.TextEncoder.layer)
        return NodeOutput(dataclasses.replace(clip, layer=stop_at_clip_layer))


class ConditioningCombine(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ConditioningCombine", display_name="Conditioning (Combine)", category="conditioning",
                      inputs=[Link("conditioning_1", "CONDITIONING"), Link("conditioning_2", "CONDITIONING")],
                      outputs=_cond_out())

    @classmethod
    def execute(cls, conditioning_1: Conditioning, conditioning_2: Conditioning) -> NodeOutput:
        # both lists' entries are evaluated and averaged by weight at sampling time
        return NodeOutput(conditioning_1 + conditioning_2)


def _pad_tokens(t: torch.Tensor, length: int) -> torch.Tensor:
    """[1, T, D] cut or zero-padded to [1, length, D]."""
    import torch

    t = t[:, :length]
    if t.shape[1] < length:
        t = torch.cat([t, t.new_zeros(t.shape[0], length - t.shape[1], t.shape[2])], dim=1)
    return t


class ConditioningAverage(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ConditioningAverage", display_name="Conditioning (Average)", category="conditioning",
                      inputs=[Link("conditioning_to", "CONDITIONING"), Link("conditioning_from", "CONDITIONING"),
                              Float("conditioning_to_strength", 1.0, min=0.0, max=1.0, step=0.01)],
                      outputs=_cond_out())

    @classmethod
    def execute(cls, conditioning_to: Conditioning, conditioning_from: Conditioning,
                conditioning_to_strength: float) -> NodeOutput:
        # s * to + (1 - s) * from, token states and pooled alike; only the first "from" entry is used
        s = conditioning_to_strength
        states_from, pooled_from = conditioning_from[0][0], conditioning_from[0][1].get("pooled_output")
        out = []
        for states, extra in conditioning_to:
            mixed = states * s + _pad_tokens(states_from, states.shape[1]) * (1.0 - s)
            extra = dict(extra)
            pooled_to = extra.get("pooled_output", pooled_from)
            if pooled_from is not None and pooled_to is not None:
                extra["pooled_output"] = pooled_to * s + pooled_from * (1.0 - s)
            out.append([mixed, extra])
        return NodeOutput(out)


class ConditioningConcat(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ConditioningConcat", display_name="Conditioning (Concat)", category="conditioning",
                      inputs=[Link("conditioning_to", "CONDITIONING"), Link("conditioning_from", "CONDITIONING")],
                      outputs=_cond_out())

    @classmethod
    def execute(cls, conditioning_to: Conditioning, conditioning_from: Conditioning) -> NodeOutput:
        # token states concatenated along the sequence: cross-attention sees both prompts' tokens
        import torch

        states_from = conditioning_from[0][0]
        return NodeOutput([[torch.cat([states, states_from], dim=1), dict(extra)] for states, extra in conditioning_to])


class ConditioningSetArea(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        side = dict(min=64, max=MAX_RESOLUTION, step=8)
        pos = dict(min=0, max=MAX_RESOLUTION, step=8)
        return Schema(node_id="ConditioningSetArea", category="conditioning",
                      inputs=[Link("conditioning", "CONDITIONING"), Int("width", 64, **side), Int("height", 64, **side),
                              Int("x", 0, **pos), Int("y", 0, **pos),
                              Float("strength", 1.0, min=0.0, max=10.0, step=0.01)],
                      outputs=_cond_out())

    @classmethod
    def execute(cls, conditioning: Conditioning, width: int, height: int, x: int, y: int,
                strength: float) -> NodeOutput:
        # area in latent cells (pixels // 8): (h, w, y, x)
        return NodeOutput(_with(conditioning, area=(height // 8, width // 8, y // 8, x // 8), strength=strength,
                                set_area_to_bounds=False))


class ConditioningSetAreaPercentage(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        unit = dict(min=0.0, max=1.0, step=0.01)
        return Schema(node_id="ConditioningSetAreaPercentage", category="conditioning",
                      inputs=[Link("conditioning", "CONDITIONING"), Float("width", 1.0, **unit),
                              Float("height", 1.0, **unit), Float("x", 0.0, **unit), Float("y", 0.0, **unit),
                              Float("strength", 1.0, min=0.0, max=10.0, step=0.01)],
                      outputs=_cond_out())

    @classmethod
    def execute(cls, conditioning: Conditioning, width: float, height: float, x: float, y: float,
                strength: float) -> NodeOutput:
        return NodeOutput(_with(conditioning, area=("percentage", height, width, y, x), strength=strength,
                                set_area_to_bounds=False))


class ConditioningSetAreaStrength(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ConditioningSetAreaStrength", category="conditioning",
                      inputs=[Link("conditioning", "CONDITIONING"),
                              Float("strength", 1.0, min=0.0, max=10.0, step=0.01)],
                      outputs=_cond_out())

    @classmethod
    def execute(cls, conditioning: Conditioning, strength: float) -> NodeOutput:
        return NodeOutput(_with(conditioning, strength=strength))


class ConditioningSetMask(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ConditioningSetMask", display_name="Conditioning (Set Mask)", category="conditioning",
                      inputs=[Link("conditioning", "CONDITIONING"), Link("mask", "MASK"),
                              Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
                              Combo("set_cond_area", ["default", "mask bounds"])],
                      outputs=_cond_out())

    @classmethod
    def execute(cls, conditioning: Conditioning, mask: torch.Tensor, strength: float,
                set_cond_area: str) -> NodeOutput:
        mask = mask.unsqueeze(0) if mask.ndim < 3 else mask
        return NodeOutput(_with(conditioning, mask=mask, mask_strength=strength,
                                set_area_to_bounds=set_cond_area != "default"))


class ConditioningSetTimestepRange(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ConditioningSetTimestepRange", category="advanced/conditioning",
                      inputs=[Link("conditioning", "CONDITIONING"), Float("start", 0.0, min=0.0, max=1.0, step=0.001),
                              Float("end", 1.0, min=0.0, max=1.0, step=0.001)],
                      outputs=_cond_out())

    @classmethod
    def execute(cls, conditioning: Conditioning, start: float, end: float) -> NodeOutput:
        # fractions of the sampling (0 = first step): the entry is used while the progress lies in [start, end]
        return NodeOutput(_with(conditioning, start_percent=start, end_percent=end))


# -- ControlNet ------------------------------------------------------------------------------------------


def _controlnets() -> list[str]:
    from fewstep.nodes.core.loaders.files import WEIGHT_SUFFIXES

    return current_paths().list_models("controlnet", WEIGHT_SUFFIXES)


def _load_controlnet(name: str) -> Any:
    from fewstep.nodes.core.controlnet import load_controlnet

    return load_controlnet(current_paths().find_model("controlnet", name))


class ControlNetLoader(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ControlNetLoader", display_name="Load ControlNet Model", category="loaders",
                      inputs=[Combo("control_net_name", _controlnets)], outputs=[Output("CONTROL_NET", "CONTROL_NET")])

    @classmethod
    def execute(cls, control_net_name: str) -> NodeOutput:
        return NodeOutput(_load_controlnet(control_net_name))


class DiffControlNetLoader(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="DiffControlNetLoader", display_name="Load ControlNet Model (diff)", category="loaders",
                      inputs=[Link("model", "MODEL"), Combo("control_net_name", _controlnets)],
                      outputs=[Output("CONTROL_NET", "CONTROL_NET")])

    @classmethod
    def execute(cls, model: Any, control_net_name: str) -> NodeOutput:
        # full ControlNets load as with ControlNetLoader; "difference" files (weights stored as deltas to
        # the UNet) get the model's UNet weights added (controlnet.add_base_weights)
        from fewstep.nodes.core.controlnet import load_controlnet

        unet = getattr(model.model_fn, "unet", None)
        if unet is None:
            raise ValueError("DiffControlNetLoader needs an SD1.x / SDXL UNet model (from a checkpoint loader)")
        return NodeOutput(load_controlnet(current_paths().find_model("controlnet", control_net_name), base_unet=unet))


def apply_control(conditioning: Conditioning, control_net: Any, image: torch.Tensor, strength: float,
                  start_percent: float, end_percent: float, to_uncond: bool,
                  made: dict[int, Any] | None = None) -> Conditioning:
    """Chain a ControlNet onto every entry; entries sharing a previous chain share the new link too."""
    from fewstep.nodes.core.conditioning import ControlSpec

    made = {} if made is None else made
    out = []
    for states, extra in conditioning:
        previous = extra.get("control")
        key = id(previous)
        if key not in made:
            made[key] = ControlSpec(control_net, image, strength, start_percent, end_percent, previous)
        out.append([states, {**extra, "control": made[key], "control_apply_to_uncond": to_uncond}])
    return out


class ControlNetApply(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ControlNetApply", display_name="Apply ControlNet (OLD)", category="conditioning/controlnet",
                      deprecated=True,
                      inputs=[Link("conditioning", "CONDITIONING"), Link("control_net", "CONTROL_NET"),
                              Link("image", "IMAGE"), Float("strength", 1.0, min=0.0, max=10.0, step=0.01)],
                      outputs=_cond_out())

    @classmethod
    def execute(cls, conditioning: Conditioning, control_net: Any, image: torch.Tensor, strength: float) -> NodeOutput:
        if strength == 0:
            return NodeOutput(conditioning)
        return NodeOutput(apply_control(conditioning, control_net, image, strength, 0.0, 1.0, True))


class ControlNetApplyAdvanced(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ControlNetApplyAdvanced", display_name="Apply ControlNet",
                      category="conditioning/controlnet",
                      inputs=[Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"),
                              Link("control_net", "CONTROL_NET"), Link("image", "IMAGE"),
                              Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
                              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
                              Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001),
                              Link("vae", "VAE", optional=True)],
                      outputs=[Output("positive", "CONDITIONING"), Output("negative", "CONDITIONING")])

    @classmethod
    def execute(cls, positive: Conditioning, negative: Conditioning, control_net: Any, image: torch.Tensor,
                strength: float, start_percent: float, end_percent: float, vae: Any = None) -> NodeOutput:
        if strength == 0:
            return NodeOutput(positive, negative)
        made: dict[int, Any] = {}
        return NodeOutput(*(apply_control(c, control_net, image, strength, start_percent, end_percent, False, made)
                            for c in (positive, negative)))


NODES: tuple[type[Node], ...] = (
    CLIPSetLastLayer, ConditioningCombine, ConditioningAverage, ConditioningConcat, ConditioningSetArea,
    ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask, ConditioningSetTimestepRange,
    ControlNetLoader, DiffControlNetLoader, ControlNetApply, ControlNetApplyAdvanced,
)
