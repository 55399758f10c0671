"""What a text-to-video sampler node does around its sampler, written once for every video pack.

The built-in model's sampler (``nodes.zoo.video``) and the few-step students' samplers (AccVideo, Efficient-vDiT,
TDM) differ only in the sigmas and the sampler they run (``nodes.core.video_sampling``). The rest is here:

- progress: a sampler callback that stops at ``/interrupt`` before it reports step ``i + 1`` of ``total``
  (:func:`step_progress`; :func:`report_step` for loops that count themselves);
- the prompt check (:func:`require_prompt`) and the clip as a ``VIDEO`` with its metadata (:func:`prompt_video`);
- the node's output: the ``VIDEO`` and its frames as an ``IMAGE`` batch, the editor's preview of the clip
  (:func:`video_sampler_output`).

Shapes: a sampled batch of clips is ``[B, T, H, W, 3]`` in 0..1; a ``VIDEO``'s frames are ``[T, H, W, 3]``.
Node modules import this at their top, so torch is imported only when a clip is made (listing nodes stays fast).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from fewstep.app.api import NodeOutput, check_interrupted, report_progress

if TYPE_CHECKING:
    import torch

    from fewstep.nodes.core.video import Video

EXAMPLE_PROMPT = "a small red circle moving right"

# callback(info) after every model evaluation, info["i"] = the step index (``nodes.core.video_sampling``)
StepCallback = Callable[[dict[str, Any]], None]


def report_step(done: int, total: int) -> None:
    """Raise if the running job was interrupted, else report ``done`` of ``total`` (no-ops outside a job)."""
    check_interrupted()
    report_progress(done, total)


def step_progress(total: int) -> StepCallback:
    """A sampler callback reporting step ``info["i"] + 1`` of ``total`` through :func:`report_step`."""
    def callback(info: dict[str, Any]) -> None:
        report_step(info["i"] + 1, total)
    return callback


def require_prompt(prompt: str, where: str) -> None:
    """Refuse an empty (or blank) prompt; ``where`` names the sampler in the message."""
    if not prompt.strip():
        raise ValueError(f"{where}: the prompt is empty; describe the clip, e.g. {EXAMPLE_PROMPT!r}")


def prompt_video(frames: torch.Tensor, fps: Fraction | int | float | str, prompt: str, settings: str) -> Video:
    """The first clip of ``frames`` ``[B, T, H, W, 3]`` as a ``VIDEO`` at ``fps``, with metadata
    ``description`` = the prompt and ``comment`` = the sampler settings."""
    from fewstep.nodes.core.video import Video

    return Video(frames[0].contiguous(), fps, {"description": prompt, "comment": settings})


def video_sampler_output(total_steps: int, sample: Callable[[StepCallback], Video]) -> NodeOutput:
    """Run ``sample(callback)`` with :func:`step_progress` over ``total_steps`` and return the node's outputs
    (``VIDEO``, ``IMAGE``): the clip and its frames ``[T, H, W, 3]``, which the editor previews."""
    video = sample(step_progress(total_steps))
    return NodeOutput(video, video.frames)
