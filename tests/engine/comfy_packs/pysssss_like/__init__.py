"""Utility nodes in the style of pythongosssss/ComfyUI-Custom-Scripts (a stand-in, see README.md): each
module of py/ is imported and its mappings merged, as that pack's loader does."""

import importlib
import os

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _file in sorted(os.listdir(os.path.join(os.path.dirname(__file__), "py"))):
    if _file.endswith(".py") and not _file.startswith("_"):
        _module = importlib.import_module(f".py.{_file[:-3]}", __name__)
        NODE_CLASS_MAPPINGS.update(getattr(_module, "NODE_CLASS_MAPPINGS", {}))
        NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_module, "NODE_DISPLAY_NAME_MAPPINGS", {}))

WEB_DIRECTORY = "./web"
