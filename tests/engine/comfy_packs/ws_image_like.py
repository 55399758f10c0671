"""Streams images over the websocket instead of saving them, like ComfyUI's own
``custom_nodes/websocket_image_save.py`` (a stand-in, see README.md)."""

import time

import comfy.utils
import numpy as np
from PIL import Image


class WebsocketImageSend:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "send"
    OUTPUT_NODE = True
    CATEGORY = "api node/image"

    def send(self, images):
        bar = comfy.utils.ProgressBar(images.shape[0])
        for step, image in enumerate(images):
            pixels = np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)
            bar.update_absolute(step, images.shape[0], ("PNG", Image.fromarray(pixels), None))
        return {}

    @classmethod
    def IS_CHANGED(cls, images):
        return time.time()


NODE_CLASS_MAPPINGS = {"WebsocketImageSend": WebsocketImageSend}
