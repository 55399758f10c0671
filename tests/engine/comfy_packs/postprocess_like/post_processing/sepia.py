"""A sepia tone on IMAGE tensors (a stand-in, see README.md)."""

import torch

SEPIA = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


class Sepia:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "apply"
    CATEGORY = "postprocessing"

    def apply(self, image, strength):
        toned = (image[..., :3] @ SEPIA.T).clamp(0, 1)
        return (image[..., :3] * (1 - strength) + toned * strength,)


NODE_CLASS_MAPPINGS = {"PP_Sepia": Sepia}
