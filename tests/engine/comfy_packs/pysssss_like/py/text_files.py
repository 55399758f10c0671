"""Load / save text files in named folders, with an HTTP route listing them (folder_paths + routes)."""

import glob
import json
import os

import folder_paths
from aiohttp import web
from server import PromptServer


def named_dirs():
    with open(os.path.join(os.path.dirname(__file__), "..", "user", "text_file_dirs.json")) as handle:
        return json.load(handle)


def dir_pattern(name):
    pattern = named_dirs()[name]
    return (pattern.replace("$input", folder_paths.get_input_directory())
            .replace("$output", folder_paths.get_output_directory())
            .replace("$temp", folder_paths.get_temp_directory()))


def root_of(pattern):
    return os.path.split(os.path.abspath(pattern.replace("/**/", "/")))[0]


def file_path(name, file):
    root = root_of(dir_pattern(name))
    os.makedirs(root, exist_ok=True)
    full = os.path.abspath(os.path.join(root, file))
    if os.path.commonpath([root, full]) != root:
        raise ReferenceError(file)
    return full


@PromptServer.instance.routes.get("/textlike/text-file/{name}")
async def list_files(request):
    pattern = dir_pattern(request.match_info["name"])
    root = root_of(pattern)
    files = sorted(os.path.relpath(f, root) for f in glob.glob(pattern, recursive="/**/" in pattern))
    return web.json_response(files or ["[none]"])


class SaveTextLike:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"root_dir": (list(named_dirs()), {}), "file": ("STRING", {"default": "file.txt"}),
                             "text": ("STRING", {"forceInput": True, "multiline": True})}}

    RETURN_TYPES = ("STRING",)
    OUTPUT_NODE = True
    FUNCTION = "write_text"
    CATEGORY = "utils"

    @classmethod
    def VALIDATE_INPUTS(cls, root_dir, file, **kwargs):
        file_path(root_dir, file)
        return True

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def write_text(self, **kwargs):
        path = file_path(kwargs["root_dir"], kwargs["file"])
        with open(path, "w") as handle:
            handle.write(kwargs["text"])
        return (kwargs["text"],)


NODE_CLASS_MAPPINGS = {"SaveText|like": SaveTextLike}
