"""A classic custom pack that uses the ComfyUI runtime modules fewstep provides, the way packs do."""

import asyncio
import os

import comfy.model_management
import comfy.utils
import folder_paths
import nodes
from aiohttp import web
from comfy_api.latest import ComfyAPI, ComfyAPISync
from server import PromptServer


@PromptServer.instance.routes.get("/runtime_pack/hello")
async def hello(request):
    return web.json_response({"hello": "from runtime_pack", "max_resolution": nodes.MAX_RESOLUTION})


@PromptServer.instance.routes.get("/prompt")
async def hijack(request):  # must not replace the server's own route
    return web.json_response({"hijacked": True})


class ListCheckpoints:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "runtime"
    OUTPUT_NODE = True

    def run(self, ckpt_name):
        path = folder_paths.get_full_path("checkpoints", ckpt_name)
        with open(path) as handle:
            content = handle.read()
        out = folder_paths.get_output_directory()
        full, filename, counter, subfolder, _ = folder_paths.get_save_image_path("rt/%width%x%height%", out, 8, 4)
        target = os.path.join(full, f"{filename}_{counter:05}_.txt")
        with open(target, "w") as handle:
            handle.write(content)
        return {"ui": {"text": [content], "files": [os.path.relpath(target, out)],
                       "input_dir": [folder_paths.get_input_directory()],
                       "known": [int("IntConstant" in nodes.NODE_CLASS_MAPPINGS)]},
                "result": (content,)}


class Steps:
    """A sampler-like loop: ComfyUI's ProgressBar with previews, interrupt checks, soft_empty_cache."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3, "min": 1, "max": nodes.MAX_RESOLUTION})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "runtime"
    OUTPUT_NODE = True

    def run(self, steps):
        from PIL import Image

        device = comfy.model_management.get_torch_device()
        bar = comfy.utils.ProgressBar(steps)
        for step in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            preview = ("JPEG", Image.new("RGB", (16, 16), (255, 0, 0)), 512)
            bar.update_absolute(step + 1, steps, preview)
        comfy.model_management.soft_empty_cache()
        return {"ui": {"device": [str(device)]}, "result": (steps,)}


class Notify:
    """Sends a custom websocket message to the prompt's client, as many packs do."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi"})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = "runtime"
    OUTPUT_NODE = True

    def run(self, text):
        server = PromptServer.instance
        server.send_sync("runtime_pack.notify", {"text": text, "client": server.client_id}, server.client_id)
        return {}


class ApiProgress:
    """comfy_api progress: the sync and the async API."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"use_async": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "runtime"
    OUTPUT_NODE = True

    def run(self, use_async):
        if use_async:
            async def report():
                api = ComfyAPI()
                for i in range(2):
                    await api.execution.set_progress(i + 1, 2)
            asyncio.run(report())
        else:
            api = ComfyAPISync()
            for i in range(2):
                api.execution.set_progress(i + 1, 2)
        return {"ui": {"done": [True]}, "result": (2,)}


NODE_CLASS_MAPPINGS = {"ListCheckpoints": ListCheckpoints, "RuntimeSteps": Steps, "Notify": Notify,
                       "ApiProgress": ApiProgress}
