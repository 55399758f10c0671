"""ComfyUI's tiled VAE nodes (``nodes.py``: VAEDecodeTiled, VAEEncodeTiled) and SDXL's text encoders with
size conditioning (``comfy_extras/nodes_clip_sdxl.py``: CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner).
Names, inputs, defaults and ranges follow ComfyUI; the work is in ``vae_tiled`` and ``text``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewstep.app.api import Float, Int, Link, Node, NodeOutput, Output, Schema, String
from fewstep.nodes.core.names import MAX_RESOLUTION

if TYPE_CHECKING:
    import torch


def _temporal() -> list[Any]:
    # video VAEs only (ComfyUI): our image VAEs have no time axis, so these two are accepted and unused
    return [Int("temporal_size", 64, min=8, max=4096, step=4, tooltip="only used for video VAEs"),
            Int("temporal_overlap", 8, min=4, max=4096, step=4, tooltip="only used for video VAEs")]


class VAEDecodeTiled(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VAEDecodeTiled", display_name="VAE Decode (Tiled)", category="_for_testing",
                      inputs=[Link("samples", "LATENT"), Link("vae", "VAE"),
                              Int("tile_size", 512, min=64, max=4096, step=32), Int("overlap", 64, min=0, max=4096, step=32),
                              *_temporal()],
                      outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, samples: dict, vae: Any, tile_size: int, overlap: int, temporal_size: int,
                temporal_overlap: int) -> NodeOutput:
        from fewstep.nodes.core.vae_tiled import decode_tiled

        return NodeOutput(decode_tiled(vae, samples["samples"], tile_size, overlap))


class VAEEncodeTiled(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VAEEncodeTiled", display_name="VAE Encode (Tiled)", category="_for_testing",
                      inputs=[Link("pixels", "IMAGE"), Link("vae", "VAE"),
                              Int("tile_size", 512, min=64, max=4096, step=64), Int("overlap", 64, min=0, max=4096, step=32),
                              *_temporal()],
                      outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, pixels: torch.Tensor, vae: Any, tile_size: int, overlap: int, temporal_size: int,
                temporal_overlap: int) -> NodeOutput:
        from fewstep.nodes.core.latent_ops import crop_to_multiple
        from fewstep.nodes.core.vae_tiled import encode_tiled

        cropped, _, _ = crop_to_multiple(pixels, vae.downscale)     # centre crop to multiples of f, as VAEEncode
        return NodeOutput({"samples": encode_tiled(vae, cropped, tile_size, overlap)})


def _size(name: str, default: int) -> Any:
    return Int(name, default, min=0, max=MAX_RESOLUTION)


class CLIPTextEncodeSDXL(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="CLIPTextEncodeSDXL", category="advanced/conditioning",
                      inputs=[Link("clip", "CLIP"), _size("width", 1024), _size("height", 1024), _size("crop_w", 0),
                              _size("crop_h", 0), _size("target_width", 1024), _size("target_height", 1024),
                              String("text_g", multiline=True, extra={"dynamicPrompts": True}),
                              String("text_l", multiline=True, extra={"dynamicPrompts": True})],
                      outputs=[Output("CONDITIONING", "CONDITIONING")])

    @classmethod
    def execute(cls, clip: Any, width: int, height: int, crop_w: int, crop_h: int, target_width: int,
                target_height: int, text_g: str, text_l: str) -> NodeOutput:
        if clip is None:
            raise ValueError("CLIPTextEncodeSDXL: the clip input is None (a checkpoint without a text encoder?)")
        # SDXL's size and crop conditioning (Podell et al. 2023, Sec. 2.2), read by sampling.model_cond
        sizes = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h, "target_width": target_width,
                 "target_height": target_height}
        return NodeOutput([[states, {**extra, **sizes}] for states, extra in clip.encode_sdxl(text_g, text_l)])


class CLIPTextEncodeSDXLRefiner(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="CLIPTextEncodeSDXLRefiner", category="advanced/conditioning",
                      inputs=[Float("ascore", 6.0, min=0.0, max=1000.0, step=0.01), _size("width", 1024),
                              _size("height", 1024), String("text", multiline=True, extra={"dynamicPrompts": True}),
                              Link("clip", "CLIP")],
                      outputs=[Output("CONDITIONING", "CONDITIONING")])

    @classmethod
    def execute(cls, ascore: float, width: int, height: int, text: str, clip: Any) -> NodeOutput:
        if clip is None:
            raise ValueError("CLIPTextEncodeSDXLRefiner: the clip input is None (a checkpoint without a text encoder?)")
        # the refiner's aesthetic-score conditioning (Podell et al. 2023, Sec. 2.5)
        extra = {"aesthetic_score": ascore, "width": width, "height": height}
        return NodeOutput([[states, {**info, **extra}] for states, info in clip.encode(text)])


NODES: tuple[type[Node], ...] = (VAEDecodeTiled, VAEEncodeTiled, CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner)
