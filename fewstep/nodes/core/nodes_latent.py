"""ComfyUI's latent nodes: upscaling (hires fix), batches, inpainting masks and encoders.

Names, inputs, defaults, ranges and outputs follow ComfyUI's ``nodes.py`` / ``comfy_extras/nodes_latent.py``.
LATENT is ``{"samples": [B, C, h, w], ...}``; ``noise_mask`` [B, 1, H, W] (1 = regenerate) is honoured by
every sampler node (``nodes.core.conditioning.InpaintGuider``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewstep.app.api import Boolean, Combo, Float, Int, Link, Node, NodeOutput, Output, Schema
from fewstep.nodes.core.names import MAX_RESOLUTION

if TYPE_CHECKING:
    import torch

LATENT_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS = ("disabled", "center")


def _latent_inputs() -> list[Any]:
    return [Link("samples", "LATENT"), Combo("upscale_method", list(LATENT_UPSCALE_METHODS))]


class LatentUpscale(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="LatentUpscale", display_name="Upscale Latent", category="latent",
                      inputs=[*_latent_inputs(), Int("width", 512, min=0, max=MAX_RESOLUTION, step=8),
                              Int("height", 512, min=0, max=MAX_RESOLUTION, step=8), Combo("crop", list(CROP_METHODS))],
                      outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, samples: dict, upscale_method: str, width: int, height: int, crop: str) -> NodeOutput:
        if width == 0 and height == 0:
            return NodeOutput(samples)
        h, w = samples["samples"].shape[-2:]
        # one side 0 keeps the aspect ratio; ComfyUI's floor of 64 pixels
        width = max(64, width or round(w * height / h))
        height = max(64, height or round(h * width / w))
        from fewstep.nodes.core.latent_ops import scale_latent

        out = scale_latent(samples["samples"], upscale_method, width // 8, height // 8, crop)
        return NodeOutput({**samples, "samples": out})


class LatentUpscaleBy(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="LatentUpscaleBy", display_name="Upscale Latent By", category="latent",
                      inputs=[*_latent_inputs(), Float("scale_by", 1.5, min=0.01, max=8.0, step=0.01)],
                      outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, samples: dict, upscale_method: str, scale_by: float) -> NodeOutput:
        h, w = samples["samples"].shape[-2:]
        from fewstep.nodes.core.latent_ops import scale_latent

        out = scale_latent(samples["samples"], upscale_method, round(w * scale_by), round(h * scale_by), "disabled")
        return NodeOutput({**samples, "samples": out})


class SetLatentNoiseMask(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SetLatentNoiseMask", display_name="Set Latent Noise Mask", category="latent/inpaint",
                      inputs=[Link("samples", "LATENT"), Link("mask", "MASK")], outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, samples: dict, mask: torch.Tensor) -> NodeOutput:
        return NodeOutput({**samples, "noise_mask": mask.reshape(-1, 1, *mask.shape[-2:])})


class RepeatLatentBatch(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="RepeatLatentBatch", display_name="Repeat Latent Batch", category="latent/batch",
                      inputs=[Link("samples", "LATENT"), Int("amount", 1, min=1, max=64)],
                      outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, samples: dict, amount: int) -> NodeOutput:
        out = {**samples, "samples": samples["samples"].repeat(amount, 1, 1, 1)}
        mask = samples.get("noise_mask")
        if mask is not None and mask.shape[0] > 1:
            if mask.shape[0] < samples["samples"].shape[0]:
                mask = mask.repeat(-(-samples["samples"].shape[0] // mask.shape[0]), 1, 1, 1)
            out["noise_mask"] = mask[:samples["samples"].shape[0]].repeat(amount, 1, 1, 1)
        if "batch_index" in samples:
            offsets = samples["batch_index"]
            step = max(offsets) - min(offsets) + 1
            out["batch_index"] = [i + k * step for k in range(amount) for i in offsets]
        return NodeOutput(out)


class LatentFromBatch(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="LatentFromBatch", display_name="Latent From Batch", category="latent/batch",
                      inputs=[Link("samples", "LATENT"), Int("batch_index", 0, min=0, max=63),
                              Int("length", 1, min=1, max=64)],
                      outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, samples: dict, batch_index: int, length: int) -> NodeOutput:
        s = samples["samples"]
        start = min(s.shape[0] - 1, batch_index)
        length = min(s.shape[0] - start, length)
        out = {**samples, "samples": s[start:start + length].clone()}
        mask = samples.get("noise_mask")
        if mask is not None and mask.shape[0] > 1:
            if mask.shape[0] < s.shape[0]:
                mask = mask.repeat(-(-s.shape[0] // mask.shape[0]), 1, 1, 1)[:s.shape[0]]
            out["noise_mask"] = mask[start:start + length].clone()
        # the noise of item i of a batch is the i-th slice of the batch's noise (ComfyUI's batch_index)
        out["batch_index"] = samples.get("batch_index", list(range(s.shape[0])))[start:start + length]
        return NodeOutput(out)


class VAEEncodeForInpaint(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VAEEncodeForInpaint", display_name="VAE Encode (for Inpainting)",
                      category="latent/inpaint",
                      inputs=[Link("pixels", "IMAGE"), Link("vae", "VAE"), Link("mask", "MASK"),
                              Int("grow_mask_by", 6, min=0, max=64, step=1)],
                      outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, pixels: torch.Tensor, vae: Any, mask: torch.Tensor, grow_mask_by: int = 6) -> NodeOutput:
        from fewstep.nodes.core.latent_ops import encode_for_inpaint

        return NodeOutput(encode_for_inpaint(vae, pixels, mask, grow_mask_by))


class InpaintModelConditioning(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="InpaintModelConditioning", category="conditioning/inpaint",
                      inputs=[Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"), Link("vae", "VAE"),
                              Link("pixels", "IMAGE"), Link("mask", "MASK"), Boolean("noise_mask", True)],
                      outputs=[Output("positive", "CONDITIONING"), Output("negative", "CONDITIONING"),
                               Output("latent", "LATENT")])

    @classmethod
    def execute(cls, positive: list, negative: list, vae: Any, pixels: torch.Tensor, mask: torch.Tensor,
                noise_mask: bool = True) -> NodeOutput:
        # The latent is the unmasked image; the conditionings carry the grey-masked image's latent and the
        # mask (``concat_latent_image`` / ``concat_mask``) for inpainting UNets with 9 input channels.
        import torch.nn.functional as F

        from fewstep.nodes.core.latent_ops import crop_to_multiple

        mask = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=pixels.shape[1:3], mode="bilinear")
        cropped, ys, xs = crop_to_multiple(pixels)
        mask = mask[:, :, ys, xs]
        grey = (cropped[..., :3] - 0.5) * (1.0 - mask.round())[:, 0, :, :, None] + 0.5
        concat, latent = vae.encode(grey), vae.encode(cropped[..., :3])
        out_latent: dict[str, Any] = {"samples": latent}
        if noise_mask:
            out_latent["noise_mask"] = mask
        conds = [[[c[0], {**c[1], "concat_latent_image": concat, "concat_mask": mask}] for c in cond]
                 for cond in (positive, negative)]
        return NodeOutput(conds[0], conds[1], out_latent)


NODES: tuple[type[Node], ...] = (
    LatentUpscale, LatentUpscaleBy, SetLatentNoiseMask, RepeatLatentBatch, LatentFromBatch, VAEEncodeForInpaint,
    InpaintModelConditioning,
)
