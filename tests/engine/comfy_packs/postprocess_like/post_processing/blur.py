"""A box blur on IMAGE tensors, in the style of the post-processing nodes (a stand-in, see README.md)."""

import torch
import torch.nn.functional as F


class BoxBlur:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "radius": ("INT", {"default": 1, "min": 0, "max": 15, "step": 1})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blur"
    CATEGORY = "postprocessing"

    def blur(self, image: torch.Tensor, radius: int):
        if radius == 0:
            return (image,)
        size = 2 * radius + 1
        channels = image.shape[-1]
        kernel = torch.ones(channels, 1, size, size) / (size * size)
        planar = image.permute(0, 3, 1, 2)  # [B,H,W,C] -> [B,C,H,W]
        padded = F.pad(planar, (radius, radius, radius, radius), mode="replicate")
        return (F.conv2d(padded, kernel, groups=channels).permute(0, 2, 3, 1),)


NODE_CLASS_MAPPINGS = {"PP_BoxBlur": BoxBlur}
