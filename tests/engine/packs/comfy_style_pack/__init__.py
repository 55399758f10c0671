"""A node pack written exactly like a ComfyUI custom node pack (classic protocol), importing nothing from
ComfyUI: loops by expansion, a lazy switch, list makers, custom validation, an async sleep,
NOT_IDEMPOTENT, IS_CHANGED, an ExecutionBlocker and "ui" results. The engine must load and run it
unchanged."""

import asyncio
import os
import random

try:  # inside ComfyUI
    from comfy_execution.graph import ExecutionBlocker
except ImportError:  # anywhere else: the same shape (the host recognises it by name and .message)
    class ExecutionBlocker:
        def __init__(self, message):
            self.message = message


class IntConstant:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"value": ("INT", {"default": 0, "min": -10000, "max": 10000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "comfy_style"

    def run(self, value):
        return (value,)


class AddInts:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"a": ("INT", {"forceInput": True}), "b": ("INT", {"default": 1})}}

    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("sum",)
    FUNCTION = "add"
    CATEGORY = "comfy_style"

    def add(self, a, b):
        return (a + b,)


class LazySwitch:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"switch": ("BOOLEAN", {"default": True}),
                             "on_true": ("*", {"lazy": True}), "on_false": ("*", {"lazy": True})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "switch"
    CATEGORY = "comfy_style"

    def check_lazy_status(self, switch, on_true=None, on_false=None):
        if switch and on_true is None:
            return ["on_true"]
        if not switch and on_false is None:
            return ["on_false"]
        return []

    def switch(self, switch, on_true=None, on_false=None):
        return (on_true if switch else on_false,)


class MakeList:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"count": ("INT", {"default": 3, "min": 0, "max": 64})}}

    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "make"
    CATEGORY = "comfy_style"

    def make(self, count):
        return (list(range(count)),)


class JoinList:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"items": ("INT", {"forceInput": True}), "sep": ("STRING", {"default": ","})}}

    RETURN_TYPES = ("STRING",)
    INPUT_IS_LIST = True
    FUNCTION = "join"
    CATEGORY = "comfy_style"

    def join(self, items, sep):
        return (sep[0].join(str(i) for i in items),)


class EvenOnly:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 100})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "comfy_style"

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        if value % 2:
            return "EvenOnly needs an even value"
        return True

    def run(self, value):
        return (value,)


class AsyncSleep:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"value": ("*",), "seconds": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 5.0})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "sleep"
    CATEGORY = "comfy_style"

    async def sleep(self, value, seconds):
        await asyncio.sleep(seconds)
        return (value,)


class RandomInt:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"high": ("INT", {"default": 1000000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "roll"
    NOT_IDEMPOTENT = True
    CATEGORY = "comfy_style"

    def roll(self, high):
        return (random.randrange(high),)


class ReadTextFile:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"path": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "read"
    CATEGORY = "comfy_style"

    @classmethod
    def IS_CHANGED(s, path):
        return os.path.getmtime(path) if os.path.exists(path) else float("NaN")

    def read(self, path):
        with open(path) as handle:
            return (handle.read(),)


class Gate:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"value": ("*",), "open": ("BOOLEAN", {"default": True})},
                "optional": {"message": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("*",)
    FUNCTION = "gate"
    CATEGORY = "comfy_style"

    def gate(self, value, open, message=""):
        if open:
            return (value,)
        return (ExecutionBlocker(message or None),)


class CountLoop:
    """Adds 1 to `value` `count` times by expanding into AddInts + a smaller CountLoop (tail recursion)."""

    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"value": ("INT", {"forceInput": True}), "count": ("INT", {"default": 3, "min": 0})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "loop"
    CATEGORY = "comfy_style"

    def loop(self, value, count, unique_id):
        if count <= 0:
            return (value,)
        graph = {
            "add": {"class_type": "AddInts", "inputs": {"a": value, "b": 1}},
            "next": {"class_type": "CountLoop", "inputs": {"value": ["add", 0], "count": count - 1}},
        }
        return {"result": (["next", 0],), "expand": graph}


class ShowValue:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"value": ("*",)},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID",
                           "dynprompt": "DYNPROMPT"}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "show"
    CATEGORY = "comfy_style"

    def show(self, value, prompt=None, extra_pnginfo=None, unique_id=None, dynprompt=None):
        node = dynprompt.get_node(unique_id)
        return {"ui": {"text": [str(value)], "class": [node["class_type"]],
                       "workflow": [bool(extra_pnginfo and "workflow" in extra_pnginfo)]}}


NODE_CLASS_MAPPINGS = {
    "IntConstant": IntConstant, "AddInts": AddInts, "LazySwitch": LazySwitch, "MakeList": MakeList,
    "JoinList": JoinList, "EvenOnly": EvenOnly, "AsyncSleep": AsyncSleep, "RandomInt": RandomInt,
    "ReadTextFile": ReadTextFile, "Gate": Gate, "CountLoop": CountLoop, "ShowValue": ShowValue,
}
NODE_DISPLAY_NAME_MAPPINGS = {"IntConstant": "Int Constant", "ShowValue": "Show Value"}
WEB_DIRECTORY = "./js"
