"""A classic-protocol pack around the core SaveImage / LoadImage (issue #14 items 8 and 9): makes flat
images and reports the pixels it receives, written like a ComfyUI custom pack."""

import torch


class SolidImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 1.0, "step": 0.01}),
                             "width": ("INT", {"default": 4, "min": 1, "max": 64}),
                             "height": ("INT", {"default": 2, "min": 1, "max": 64}),
                             "label": ("STRING", {"default": "run"})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "pixel"

    def make(self, value, width, height, label):
        return (torch.full((1, height, width, 3), value),)


class FirstPixel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "report"
    CATEGORY = "pixel"
    OUTPUT_NODE = True

    def report(self, image):
        return {"ui": {"pixel": [round(float(image[0, 0, 0, 0]) * 255)], "shape": [list(image.shape)]}}


NODE_CLASS_MAPPINGS = {"SolidImage": SolidImage, "FirstPixel": FirstPixel}
