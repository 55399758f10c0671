"""Node feedback to the editor, in the style of ComfyUI-Impact-Pack (a stand-in, see README.md): a node
tells the editor to change one of its widgets, and honours interrupts in its loop."""

import comfy.model_management
from server import PromptServer


class CountDownFeedback:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3, "min": 0, "max": 100})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    OUTPUT_NODE = True
    FUNCTION = "run"
    CATEGORY = "feedback"

    def run(self, count, unique_id):
        left = count
        while left > 0:
            comfy.model_management.throw_exception_if_processing_interrupted()
            left -= 1
        PromptServer.instance.send_sync("impact-node-feedback", {"node_id": unique_id, "widget_name": "count",
                                                                 "type": "int", "value": left})
        return (count,)


NODE_CLASS_MAPPINGS = {"CountDownFeedback": CountDownFeedback}
