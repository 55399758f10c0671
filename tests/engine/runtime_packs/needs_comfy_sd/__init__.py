"""A pack that needs a ComfyUI module fewstep does not provide: it must fail to load, clearly."""

import comfy.sd  # noqa: F401

NODE_CLASS_MAPPINGS = {}
