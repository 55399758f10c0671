"""Export nodes: ComfyUI's video and 3D nodes (names, inputs and ``ui`` results as ComfyUI v0.8 has them)
with our extra options as optional inputs, so ComfyUI API graphs validate and run unchanged.

- video: CreateVideo, GetVideoComponents, SaveVideo, LoadVideo, SaveWEBM, SaveAnimatedWEBP, SaveAnimatedPNG
- 3D: SaveGLB, Preview3D, Load3D, and ours: SaveMesh (GLB / OBJ / PLY) and MeshFromPrimitive (a mesh of an
  analytic solid by marching cubes)

Saved files go to the output folder under ``<prefix>_<counter:05>_.<ext>`` exactly as SaveImage names them;
the graph goes into each file's metadata (see ``fewstep.nodes.core.video_io`` / ``mesh_io``).
"""

from __future__ import annotations

from typing import Any

from fewstep.app.api import (
    Boolean,
    Combo,
    Float,
    Hidden,
    Input,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    Schema,
    String,
)
from fewstep.nodes.export.files import MESH_SUFFIXES, VIDEO_SUFFIXES, list_input_files
from fewstep.nodes.export.names import COLOURINGS, SHAPE_NAMES

VIDEO_CATEGORY = "video"
MESH_CATEGORY = "3d"
# SaveVideo's choices: ComfyUI's first (format auto | mp4, codec auto | h264), then ours.
SAVE_FORMATS = ["auto", "mp4", "webm", "gif", "webp", "png", "frames"]
SAVE_CODECS = ["auto", "h264", "vp9"]
_GRAPH = [Hidden.PROMPT, Hidden.EXTRA_PNGINFO]


def _fps(name: str, default: float, low: float, high: float, step: float) -> Input:
    return Float(name, default, min=low, max=high, step=step, tooltip="frames per second")


# ---------------------------------------------------------------------------------------------- video


class CreateVideo(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="CreateVideo", display_name="Create Video", category=VIDEO_CATEGORY,
                      description="Makes a VIDEO from a batch of images (one frame each) at a frame rate.",
                      inputs=[Link("images", "IMAGE", tooltip="the frames, [T, H, W, 3]"),
                              _fps("fps", 30.0, 1.0, 120.0, 1.0),
                              Link("audio", "AUDIO", optional=True, tooltip="not supported: leave unconnected")],
                      outputs=[Output("VIDEO", "VIDEO")])

    @classmethod
    def execute(cls, images: Any, fps: float, audio: Any = None) -> NodeOutput:
        from fewstep.nodes.export.video import video_from_images

        return NodeOutput(video_from_images(images, fps, audio))


class GetVideoComponents(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="GetVideoComponents", display_name="Get Video Components", category=VIDEO_CATEGORY,
                      description="The frames (IMAGE), audio (always None here) and frame rate of a VIDEO.",
                      inputs=[Link("video", "VIDEO")],
                      outputs=[Output("images", "IMAGE"), Output("audio", "AUDIO"), Output("fps", "FLOAT")])

    @classmethod
    def execute(cls, video: Any) -> NodeOutput:
        from fewstep.nodes.export.video import require_video

        parts = require_video(video, "video").get_components()
        return NodeOutput(parts.images, parts.audio, float(parts.frame_rate))


class SaveVideo(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="SaveVideo", display_name="Save Video", category=VIDEO_CATEGORY, is_output_node=True,
            description="Saves a VIDEO under output/ with the graph inside: mp4 (H.264) or webm (VP9) through "
                        "PyAV, animated gif / webp / png, or a folder of PNG frames.",
            inputs=[Link("video", "VIDEO", tooltip="the video to save"),
                    String("filename_prefix", "video/ComfyUI", tooltip="sub-folders allowed; %date:...% etc."),
                    Combo("format", SAVE_FORMATS, default="auto",
                          tooltip="auto: mp4, or webm when codec is vp9; frames: a folder of PNGs"),
                    Combo("codec", SAVE_CODECS, default="auto", tooltip="h264 for mp4, vp9 for webm"),
                    Float("crf", -1.0, min=-1.0, max=63.0, step=1.0, optional=True,
                          tooltip="quality, lower is better: -1 = 19 for H.264 (0-51), 31 for VP9 (0-63)"),
                    Int("quality", 90, min=0, max=100, optional=True, tooltip="webp quality"),
                    Boolean("lossless", False, optional=True, tooltip="lossless webp")],
            hidden=_GRAPH, outputs=[])

    @classmethod
    def execute(cls, video: Any, filename_prefix: str = "video/ComfyUI", format: str = "auto", codec: str = "auto",
                crf: float = -1.0, quality: int = 90, lossless: bool = False, prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeOutput:
        from fewstep.nodes.export.video import SaveOptions, save_video_output

        options = SaveOptions(format=format, codec=codec, crf=None if crf < 0 else crf, quality=quality,
                              lossless=lossless)
        return NodeOutput(ui=save_video_output(video, filename_prefix, options, prompt, extra_pnginfo))


class SaveWEBM(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SaveWEBM", display_name="Save WEBM", category=VIDEO_CATEGORY, is_output_node=True,
                      description="Saves images as a VP9 WebM under output/ (ComfyUI's SaveWEBM; av1 not offered).",
                      inputs=[Link("images", "IMAGE"), String("filename_prefix", "ComfyUI"),
                              Combo("codec", ["vp9"], default="vp9"), _fps("fps", 24.0, 0.01, 1000.0, 0.01),
                              Float("crf", 32.0, min=0.0, max=63.0, step=1.0,
                                    tooltip="higher crf: lower quality, smaller file")],
                      hidden=_GRAPH, outputs=[])

    @classmethod
    def execute(cls, images: Any, filename_prefix: str, codec: str, fps: float, crf: float, prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeOutput:
        from fewstep.nodes.export.video import SaveOptions, save_video_output, video_from_images

        options = SaveOptions(format="webm", codec=codec, crf=crf)
        return NodeOutput(ui=save_video_output(video_from_images(images, fps), filename_prefix, options, prompt,
                                               extra_pnginfo))


class SaveAnimatedWEBP(Node):
    METHODS = {"default": 4, "fastest": 0, "slowest": 6}

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SaveAnimatedWEBP", display_name="Save Animated WEBP", category="image/animation",
                      is_output_node=True, description="Saves images as one animated WebP under output/.",
                      inputs=[Link("images", "IMAGE"), String("filename_prefix", "ComfyUI"),
                              _fps("fps", 6.0, 0.01, 1000.0, 0.01), Boolean("lossless", True),
                              Int("quality", 80, min=0, max=100), Combo("method", list(cls.METHODS))],
                      hidden=_GRAPH, outputs=[])

    @classmethod
    def execute(cls, images: Any, filename_prefix: str, fps: float, lossless: bool, quality: int, method: str,
                prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        from fewstep.nodes.export.video import SaveOptions, save_video_output, video_from_images

        options = SaveOptions(format="webp", quality=quality, lossless=lossless, method=cls.METHODS[method])
        return NodeOutput(ui=save_video_output(video_from_images(images, fps), filename_prefix, options, prompt,
                                               extra_pnginfo))


class SaveAnimatedPNG(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SaveAnimatedPNG", display_name="Save Animated PNG", category="image/animation",
                      is_output_node=True, description="Saves images as one animated PNG (APNG) under output/.",
                      inputs=[Link("images", "IMAGE"), String("filename_prefix", "ComfyUI"),
                              _fps("fps", 6.0, 0.01, 1000.0, 0.01), Int("compress_level", 4, min=0, max=9)],
                      hidden=_GRAPH, outputs=[])

    @classmethod
    def execute(cls, images: Any, filename_prefix: str, fps: float, compress_level: int, prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeOutput:
        from fewstep.nodes.export.video import SaveOptions, save_video_output, video_from_images

        options = SaveOptions(format="png", compress_level=compress_level)
        return NodeOutput(ui=save_video_output(video_from_images(images, fps), filename_prefix, options, prompt,
                                               extra_pnginfo))


def _input_videos() -> list[str]:
    return list_input_files(VIDEO_SUFFIXES)


class LoadVideo(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="LoadVideo", display_name="Load Video", category=VIDEO_CATEGORY,
                      description="Reads a video file of the input folder (mp4, webm, mkv, mov, gif, webp) as a "
                                  "VIDEO with its frame rate and metadata.",
                      inputs=[Combo("file", _input_videos, extra={"video_upload": True})],
                      outputs=[Output("VIDEO", "VIDEO")])

    @classmethod
    def execute(cls, file: str) -> NodeOutput:
        from fewstep.nodes.core.video_io import load_video
        from fewstep.nodes.export.files import input_file

        return NodeOutput(load_video(input_file(file, "video")))

    @classmethod
    def fingerprint_inputs(cls, file: str) -> Any:
        """The file's modification time and size: a re-uploaded file of the same name reloads."""
        from fewstep.nodes.export.files import input_file

        try:
            stat = input_file(file, "video").stat()
        except FileNotFoundError:
            return file
        return (file, stat.st_mtime_ns, stat.st_size)

    @classmethod
    def validate_inputs(cls, file: str) -> bool | str:
        from fewstep.nodes.export.files import input_file

        try:
            input_file(file, "video")
        except FileNotFoundError:
            return f"Invalid video file: {file}"
        return True


# ------------------------------------------------------------------------------------------------- 3D


class SaveGLB(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        # Exactly ComfyUI's inputs: the editor adds a 3D-viewer widget to SaveGLB nodes after them, so an extra
        # widget here would shift the positional widgets_values of saved workflows (SaveMesh has the options).
        return Schema(node_id="SaveGLB", display_name="Save 3D Model", category=MESH_CATEGORY, is_output_node=True,
                      description="Saves a MESH as GLB under output/ (the graph in asset.extras; an articulated "
                                  "mesh keeps its joints as node animations) and shows it in the editor's viewer.",
                      inputs=[Link("mesh", "MESH"), String("filename_prefix", "mesh/ComfyUI")],
                      hidden=_GRAPH, outputs=[])

    @classmethod
    def execute(cls, mesh: Any, filename_prefix: str = "mesh/ComfyUI", prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeOutput:
        from fewstep.nodes.export.mesh import save_mesh_output

        return NodeOutput(ui={"3d": [save_mesh_output(mesh, filename_prefix, "glb", prompt, extra_pnginfo)]})


class SaveMesh(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SaveMesh", display_name="Save Mesh (GLB / OBJ / PLY)", category=MESH_CATEGORY,
                      is_output_node=True,
                      description="Saves a MESH under output/ as GLB, OBJ or PLY with vertex colours and the graph "
                                  "inside (OBJ / PLY join an articulated mesh's parts in the rest pose).",
                      inputs=[Link("mesh", "MESH"), String("filename_prefix", "mesh/fewstep"),
                              Combo("format", ["glb", "obj", "ply"], default="glb")],
                      hidden=_GRAPH, outputs=[])

    @classmethod
    def execute(cls, mesh: Any, filename_prefix: str, format: str, prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeOutput:
        from fewstep.nodes.export.mesh import save_mesh_output

        return NodeOutput(ui={"3d": [save_mesh_output(mesh, filename_prefix, format, prompt, extra_pnginfo)]})


class Preview3D(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="Preview3D", display_name="Preview 3D", category=MESH_CATEGORY, is_output_node=True,
                      description="Shows a 3D file of the output folder (model_file, e.g. from SaveGLB) or a "
                                  "linked MESH (saved first as output/preview3d/...glb) in the editor's viewer.",
                      inputs=[String("model_file", "", tooltip="a path inside output/, e.g. mesh/ComfyUI_00001_.glb"),
                              Link("camera_info", "LOAD3D_CAMERA", optional=True),
                              Link("bg_image", "IMAGE", optional=True, tooltip="not used here"),
                              Link("mesh", "MESH", optional=True, tooltip="ours: preview this mesh instead")],
                      hidden=_GRAPH, outputs=[])

    @classmethod
    def execute(cls, model_file: str = "", camera_info: Any = None, bg_image: Any = None, mesh: Any = None,
                prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        from fewstep.nodes.export.mesh import preview_model_file

        path = preview_model_file(model_file, mesh, prompt, extra_pnginfo)
        return NodeOutput(ui={"result": [path, camera_info, None]})


def _input_meshes() -> list[str]:
    return list_input_files(MESH_SUFFIXES, "3d", recursive=True)


class Load3D(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="Load3D", display_name="Load 3D Model", category=MESH_CATEGORY,
            description="Loads a 3D file of input/3d. With the editor's viewer capture (image) the views are "
                        "what the viewer shows; without it (headless) a shaded orthographic view is rendered. "
                        "The last output is the MESH itself (ours).",
            inputs=[Combo("model_file", _input_meshes, extra={"model_upload": True}),
                    Link("image", "LOAD_3D", tooltip="filled by the editor's 3D viewer; {} when run headless"),
                    Int("width", 1024, min=1, max=4096), Int("height", 1024, min=1, max=4096)],
            outputs=[Output("image", "IMAGE"), Output("mask", "MASK"), Output("mesh_path", "STRING"),
                     Output("normal", "IMAGE"), Output("camera_info", "LOAD3D_CAMERA"),
                     Output("recording_video", "VIDEO"), Output("mesh", "MESH")])

    @classmethod
    def execute(cls, model_file: str, image: Any, width: int, height: int) -> NodeOutput:
        from fewstep.nodes.export.mesh import load_3d_outputs

        return NodeOutput(*load_3d_outputs(model_file, image, width, height))

    @classmethod
    def validate_inputs(cls, model_file: str, image: Any = None) -> bool | str:
        """``image`` is the editor's capture record (a dict), a constant of a non-widget type."""
        from fewstep.nodes.export.files import input_file

        if image is not None and not isinstance(image, dict):
            return f"image must be the 3D viewer's capture record, got {type(image).__name__}"
        try:
            input_file(model_file, "3D model")
        except FileNotFoundError:
            return f"Invalid 3D model file: {model_file}"
        return True


class MeshFromPrimitive(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="MeshFromPrimitive", display_name="Mesh From Primitive", category=MESH_CATEGORY,
                      description="A closed, coloured MESH of an analytic solid: its exact SDF sampled on a "
                                  "resolution^3 grid over [-1, 1]^3, then marching cubes.",
                      inputs=[Combo("shape", list(SHAPE_NAMES), default="torus"),
                              Int("resolution", 48, min=8, max=256, tooltip="SDF samples per side"),
                              Float("size", 0.6, min=0.05, max=0.95, step=0.01, tooltip="radius-like, grid units"),
                              Combo("colour", list(COLOURINGS), default="position",
                                    tooltip="position: (xyz + 1) / 2 as RGB")],
                      outputs=[Output("MESH", "MESH")])

    @classmethod
    def execute(cls, shape: str, resolution: int, size: float, colour: str) -> NodeOutput:
        from fewstep.nodes.export.primitives import primitive_mesh

        return NodeOutput(primitive_mesh(shape, resolution, size, colour))


NODES: tuple[type, ...] = (
    CreateVideo, GetVideoComponents, SaveVideo, SaveWEBM, SaveAnimatedWEBP, SaveAnimatedPNG, LoadVideo,
    SaveGLB, SaveMesh, Preview3D, Load3D, MeshFromPrimitive,
)
