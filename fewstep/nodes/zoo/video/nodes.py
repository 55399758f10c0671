"""Nodes of the built-in video model: a loader (VIDEO_MODEL) and a text-to-video sampler (VIDEO + IMAGE).

VIDEO_MODEL is :class:`fewstep.nodes.zoo.video.model.VideoModel` (DiT + per-frame VAE + MiniLM); its
``denoiser()`` is a core MODEL-style ``Denoiser``, so distillation packs can take the bundle and hand a
student back in the same type.
"""

from __future__ import annotations

from typing import Any

from fewstep.app.api import (
    Combo,
    Float,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    Schema,
    String,
    cached_model,
)
from fewstep.nodes.core.video_nodes import video_sampler_output

SEED_MAX = 0xFFFFFFFFFFFFFFFF
VIDEO_MODEL = "VIDEO_MODEL"
SAMPLER_NAMES = ["flow_euler", "flow_heun", "flow_consistency"]


def _model_names() -> list[str]:
    from fewstep.nodes.zoo.video.model import list_video_models

    return list_video_models()


class VideoModelLoader(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="FewstepVideoModelLoader", display_name="Load Built-in Video Model", category="loaders/video",
                      description="The built-in rectified-flow video DiT (64x64 clips of moving shapes) with its VAE "
                                  "and MiniLM text encoder.",
                      inputs=[Combo("model_name", _model_names, tooltip="video models shipped in the zoo's weights/")],
                      outputs=[Output("VIDEO_MODEL", VIDEO_MODEL)])

    @classmethod
    def execute(cls, model_name: str) -> NodeOutput:
        import torch

        from fewstep.nodes.core.loaders import pick_device
        from fewstep.nodes.zoo.builtin import weights_dir
        from fewstep.nodes.zoo.video.model import load_video_model

        device, _ = pick_device()
        return NodeOutput(cached_model(weights_dir() / model_name, torch.float32, device,
                                       lambda: load_video_model(model_name, device)))


def _sampling_inputs() -> list[Any]:
    return [Int("frames", 8, min=1, max=16, tooltip="clip length; the built-in model is trained on 8 (and 16 on GPU)"),
            Int("steps", 50, min=1, max=500, tooltip="sampler steps (the teacher: 50; few-step students: 5)"),
            Float("shift", 3.0, min=0.01, max=100.0, step=0.1, tooltip="timestep shift of the flow schedule (SD3 eq. 23)"),
            Float("cfg", 4.0, min=1.0, max=30.0, step=0.1, tooltip="classifier-free guidance scale (1 = off)"),
            Combo("sampler_name", SAMPLER_NAMES, default="flow_euler",
                  tooltip="flow_euler / flow_heun: ODE solvers; flow_consistency: multistep consistency (students)"),
            Int("seed", 0, min=0, max=SEED_MAX, control_after_generate=True)]


class TextToVideo(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="FewstepTextToVideo", display_name="Text to Video (built-in)", category="sampling/video",
                      description="Samples a clip from a prompt with a VIDEO_MODEL (shifted flow schedule, CFG).",
                      inputs=[Link("video_model", VIDEO_MODEL),
                              String("prompt", "a small red circle moving right", multiline=True),
                              String("negative_prompt", "", multiline=True), *_sampling_inputs()],
                      outputs=[Output("VIDEO", "VIDEO"), Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, video_model: Any, prompt: str, negative_prompt: str, frames: int, steps: int, shift: float,
                cfg: float, sampler_name: str, seed: int) -> NodeOutput:
        from fewstep.nodes.zoo.video.model import text_to_video

        return video_sampler_output(steps, lambda progress: text_to_video(
            video_model, prompt, negative_prompt, frames=frames, steps=steps, shift=shift, cfg=cfg,
            sampler=sampler_name, seed=seed, callback=progress))


NODES: tuple[type[Node], ...] = (VideoModelLoader, TextToVideo)
