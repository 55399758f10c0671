"""ComfyUI's image nodes: resizing, padding for outpainting, cropping, batches, masks, Canny edges, upscale
models (through spandrel, the library ComfyUI uses), and the small utility nodes frequent in templates.

IMAGE is [B, H, W, C] float in 0..1; MASK is [B, H, W] (1 = masked / to regenerate). Names, inputs, defaults,
ranges and outputs follow ComfyUI's ``nodes.py`` and ``comfy_extras`` (``nodes_images.py``,
``nodes_upscale_model.py``, ``nodes_canny.py``, ``nodes_mask.py``, ``nodes_primitive.py``, ``nodes_preview_any.py``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from fewstep.app.api import (
    ANY,
    Combo,
    Float,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    Schema,
    String,
    current_paths,
)
from fewstep.nodes.core.names import MAX_RESOLUTION, UPSCALE_METHODS

if TYPE_CHECKING:
    import torch


class ImageScaleBy(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ImageScaleBy", display_name="Upscale Image By", category="image/upscaling",
                      inputs=[Link("image", "IMAGE"), Combo("upscale_method", list(UPSCALE_METHODS)),
                              Float("scale_by", 1.0, min=0.01, max=8.0, step=0.01)],
                      outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, image: torch.Tensor, upscale_method: str, scale_by: float) -> NodeOutput:
        from fewstep.nodes.core.imaging import scale_images

        width, height = round(image.shape[2] * scale_by), round(image.shape[1] * scale_by)
        return NodeOutput(scale_images(image, upscale_method, width, height, "disabled"))


class ImageScaleToTotalPixels(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ImageScaleToTotalPixels", display_name="Scale Image to Total Pixels",
                      category="image/upscaling",
                      inputs=[Link("image", "IMAGE"), Combo("upscale_method", list(UPSCALE_METHODS)),
                              Float("megapixels", 1.0, min=0.01, max=16.0, step=0.01),
                              Int("resolution_steps", 1, min=1, max=256)],
                      outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, image: torch.Tensor, upscale_method: str, megapixels: float,
                resolution_steps: int = 1) -> NodeOutput:
        from fewstep.nodes.core.imaging import scale_images

        # keep the aspect ratio: s = sqrt(megapixels * 1024^2 / (H W)), each side rounded to resolution_steps
        scale = math.sqrt(megapixels * 1024 * 1024 / (image.shape[1] * image.shape[2]))
        width = max(resolution_steps, round(image.shape[2] * scale / resolution_steps) * resolution_steps)
        height = max(resolution_steps, round(image.shape[1] * scale / resolution_steps) * resolution_steps)
        return NodeOutput(scale_images(image, upscale_method, width, height, "disabled"))


class ImagePadForOutpaint(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        side = dict(min=0, max=MAX_RESOLUTION, step=8)
        return Schema(node_id="ImagePadForOutpaint", display_name="Pad Image for Outpainting", category="image",
                      inputs=[Link("image", "IMAGE"), Int("left", 0, **side), Int("top", 0, **side),
                              Int("right", 0, **side), Int("bottom", 0, **side),
                              Int("feathering", 40, min=0, max=MAX_RESOLUTION, step=1)],
                      outputs=[Output("IMAGE", "IMAGE"), Output("MASK", "MASK")])

    @classmethod
    def execute(cls, image: torch.Tensor, left: int, top: int, right: int, bottom: int,
                feathering: int) -> NodeOutput:
        from fewstep.nodes.core.image_ops import pad_for_outpaint

        return NodeOutput(*pad_for_outpaint(image, left, top, right, bottom, feathering))


class ImageInvert(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ImageInvert", display_name="Invert Image", category="image",
                      inputs=[Link("image", "IMAGE")], outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, image: torch.Tensor) -> NodeOutput:
        return NodeOutput(1.0 - image)


class ImageCrop(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        size = dict(min=1, max=MAX_RESOLUTION, step=1)
        pos = dict(min=0, max=MAX_RESOLUTION, step=1)
        return Schema(node_id="ImageCrop", display_name="Image Crop", category="image/transform",
                      inputs=[Link("image", "IMAGE"), Int("width", 512, **size), Int("height", 512, **size),
                              Int("x", 0, **pos), Int("y", 0, **pos)],
                      outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, image: torch.Tensor, width: int, height: int, x: int, y: int) -> NodeOutput:
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return NodeOutput(image[:, y:y + height, x:x + width, :])


class EmptyImage(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="EmptyImage", category="image",
                      inputs=[Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
                              Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
                              Int("batch_size", 1, min=1, max=4096),
                              Int("color", 0, min=0, max=0xFFFFFF, step=1, extra={"display": "color"})],
                      outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, width: int, height: int, batch_size: int = 1, color: int = 0) -> NodeOutput:
        import torch

        rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 255.0
        return NodeOutput(rgb.expand(batch_size, height, width, 3).clone())


class ImageBatch(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ImageBatch", display_name="Batch Images", category="image",
                      inputs=[Link("image1", "IMAGE"), Link("image2", "IMAGE")], outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, image1: torch.Tensor, image2: torch.Tensor) -> NodeOutput:
        import torch

        from fewstep.nodes.core.image_ops import match_batch

        return NodeOutput(torch.cat([image1, match_batch(image1, image2)], dim=0))


class RebatchImages(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="RebatchImages", display_name="Rebatch Images", category="image/batch",
                      is_input_list=True,
                      inputs=[Link("images", "IMAGE"), Int("batch_size", 1, min=1, max=4096)],
                      outputs=[Output("IMAGE", "IMAGE", is_list=True)])

    @classmethod
    def execute(cls, images: list[torch.Tensor], batch_size: list[int]) -> NodeOutput:
        size = batch_size[0]
        import torch

        frames = [frame for batch in images for frame in batch]
        return NodeOutput([torch.stack(frames[i:i + size]) for i in range(0, len(frames), size)])


class GetImageSize(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="GetImageSize", display_name="Get Image Size", category="image",
                      inputs=[Link("image", "IMAGE")],
                      outputs=[Output("width", "INT"), Output("height", "INT"), Output("batch_size", "INT")])

    @classmethod
    def execute(cls, image: torch.Tensor) -> NodeOutput:
        return NodeOutput(int(image.shape[2]), int(image.shape[1]), int(image.shape[0]))


class ImageToMask(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ImageToMask", display_name="Convert Image to Mask", category="mask",
                      inputs=[Link("image", "IMAGE"), Combo("channel", ["red", "green", "blue", "alpha"])],
                      outputs=[Output("MASK", "MASK")])

    @classmethod
    def execute(cls, image: torch.Tensor, channel: str) -> NodeOutput:
        return NodeOutput(image[..., ["red", "green", "blue", "alpha"].index(channel)])


class MaskToImage(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="MaskToImage", display_name="Convert Mask to Image", category="mask",
                      inputs=[Link("mask", "MASK")], outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, mask: torch.Tensor) -> NodeOutput:
        mask = mask.reshape(-1, *mask.shape[-2:])
        return NodeOutput(mask[..., None].expand(*mask.shape, 3).clone())


class InvertMask(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="InvertMask", category="mask", inputs=[Link("mask", "MASK")],
                      outputs=[Output("MASK", "MASK")])

    @classmethod
    def execute(cls, mask: torch.Tensor) -> NodeOutput:
        return NodeOutput(1.0 - mask)


class Canny(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        threshold = dict(min=0.01, max=0.99, step=0.01)
        return Schema(node_id="Canny", category="image/preprocessors",
                      inputs=[Link("image", "IMAGE"), Float("low_threshold", 0.4, **threshold),
                              Float("high_threshold", 0.8, **threshold)],
                      outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, image: torch.Tensor, low_threshold: float, high_threshold: float) -> NodeOutput:
        from fewstep.nodes.core.controlnet import canny

        edges = canny(image, low_threshold, high_threshold)                     # [B, H, W]
        return NodeOutput(edges[..., None].expand(*edges.shape, 3).clone())


# -- upscale models (ESRGAN and relatives, through spandrel) ---------------------------------------------


def _upscale_models() -> list[str]:
    from fewstep.nodes.core.loaders.files import WEIGHT_SUFFIXES

    return current_paths().list_models("upscale_models", WEIGHT_SUFFIXES)


def load_upscale_model(name: str) -> Any:
    """A spandrel ``ImageModelDescriptor`` for ``upscale_models/<name>`` (eval, on the checkpoints' device).

    spandrel recognises the architecture (ESRGAN / Real-ESRGAN, SwinIR, HAT, DAT, ...) from the keys;
    ``module.`` prefixes are stripped first, as ComfyUI does."""
    import spandrel
    import torch

    from fewstep.nodes.core.loaders import pick_device
    from fewstep.nodes.core.loaders.files import cached, read_state_dict

    path = current_paths().find_model("upscale_models", name)
    device, _ = pick_device()

    def load() -> Any:
        state = read_state_dict(path)
        if any(k.startswith("module.") for k in state):
            state = {k.removeprefix("module."): v for k, v in state.items()}
        model = spandrel.ModelLoader().load_from_state_dict(state)
        if not isinstance(model, spandrel.ImageModelDescriptor):
            raise ValueError(f"{path}: not a single-image model ({type(model).__name__})")
        return model.to(device).eval()

    return cached(path, torch.float32, device, load)


class UpscaleModelLoader(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="UpscaleModelLoader", display_name="Load Upscale Model", category="loaders",
                      inputs=[Combo("model_name", _upscale_models)], outputs=[Output("UPSCALE_MODEL", "UPSCALE_MODEL")])

    @classmethod
    def execute(cls, model_name: str) -> NodeOutput:
        return NodeOutput(load_upscale_model(model_name))


class ImageUpscaleWithModel(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ImageUpscaleWithModel", display_name="Upscale Image (using Model)",
                      category="image/upscaling",
                      inputs=[Link("upscale_model", "UPSCALE_MODEL"), Link("image", "IMAGE")],
                      outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, upscale_model: Any, image: torch.Tensor) -> NodeOutput:
        from fewstep.nodes.core.image_ops import upscale_tiled

        return NodeOutput(upscale_tiled(upscale_model, image))


# -- utilities -------------------------------------------------------------------------------------------


class PrimitiveStringMultiline(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="PrimitiveStringMultiline", display_name="String (Multiline)",
                      category="utils/primitive", inputs=[String("value", multiline=True)],
                      outputs=[Output("STRING", "STRING")])

    @classmethod
    def execute(cls, value: str) -> NodeOutput:
        return NodeOutput(value)


class PreviewAny(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="PreviewAny", display_name="Preview Any", category="utils", is_output_node=True,
                      inputs=[Link("source", ANY)], outputs=[])

    @classmethod
    def execute(cls, source: Any) -> NodeOutput:
        from fewstep.nodes.core.image_ops import preview_text

        return NodeOutput(ui={"text": [preview_text(source)]})


NODES: tuple[type[Node], ...] = (
    ImageScaleBy, ImageScaleToTotalPixels, ImagePadForOutpaint, ImageInvert, ImageCrop, EmptyImage, ImageBatch,
    RebatchImages, GetImageSize, ImageToMask, MaskToImage, InvertMask, Canny, UpscaleModelLoader,
    ImageUpscaleWithModel, PrimitiveStringMultiline, PreviewAny,
)
