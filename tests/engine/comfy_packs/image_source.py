"""A test helper: a flat IMAGE of any size, and a gradient."""

import torch


class FlatImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 8, "min": 1, "max": 4096}),
                             "height": ("INT", {"default": 8, "min": 1, "max": 4096}),
                             "batch": ("INT", {"default": 1, "min": 1, "max": 16}),
                             "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "test"

    def make(self, width, height, batch, value):
        image = torch.full((batch, height, width, 3), value)
        image[:, : height // 2, : width // 2, 0] = 1.0  # one bright corner: a blur changes something
        return (image,)


class ImageProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def probe(self, image):
        return {"ui": {"shape": [list(image.shape)], "mean": [round(float(image.mean()), 4)],
                       "max": [round(float(image.max()), 4)]}}


NODE_CLASS_MAPPINGS = {"FlatImage": FlatImage, "ImageProbe": ImageProbe}
