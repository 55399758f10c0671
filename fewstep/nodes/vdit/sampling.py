"""The few-step sampler of MLCD students: segment boundaries, deterministic jumps or re-noising.

A student of ``FlowSegments(base_steps, segments, shift)`` is sampled on the segment boundaries
(``FlowSegments.sampling_sigmas``). At each boundary it predicts x0; then either

- ``jump``: the DDIM jump to the next boundary (multistep consistency sampling, Heek et al. 2024), which on
  the flow path is an Euler step: core's ``sample_flow_euler`` on those sigmas;
- ``renoise``: x0 re-noised with fresh noise to the next boundary (LCM / TLCM ``inference.py``): core's
  ``sample_flow_consistency``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fewstep.nodes.core.train.flow_consistency import FlowSegments
from fewstep.nodes.core.video_nodes import prompt_video, require_prompt

MODES = {"jump": "flow_euler", "renoise": "flow_consistency"}


def student_segments(model: Any) -> FlowSegments:
    """The segments a VIDEO_MODEL was distilled on (its info), default 50 steps in 10 segments at shift 3."""
    info = model.info
    return FlowSegments(int(info.get("base_steps", 50)), int(info.get("segments", 10)), float(info.get("shift", 3.0)))


def consistency_generate(model: Any, prompts: list[str], *, frames: int = 8, steps: int | None = None,
                         mode: str = "jump", cfg: float = 1.0, seed: int = 0,
                         callback: Callable[[dict[str, Any]], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames ``[B, T, 64, 64, 3]``, latents) of a ``steps``-step consistency run (default: every segment)."""
    from fewstep.nodes.zoo.video.model import generate

    if mode not in MODES:
        raise ValueError(f"consistency sampler mode must be one of {sorted(MODES)}, got {mode!r}")
    segments = student_segments(model)
    sigmas = segments.sampling_sigmas(segments.segments if steps is None else steps)
    return generate(model, prompts, frames=frames, cfg=cfg, seed=seed, sampler=MODES[mode], sigmas=sigmas,
                    callback=callback)


def consistency_video(model: Any, prompt: str, *, frames: int = 8, steps: int = 10, mode: str = "jump",
                      cfg: float = 1.0, seed: int = 0, callback: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """One clip as a core ``Video`` (the model's fps; metadata: prompt and sampler settings)."""
    require_prompt(prompt, "consistency sampler")
    out, _ = consistency_generate(model, [prompt], frames=frames, steps=steps, mode=mode, cfg=cfg, seed=seed,
                                  callback=callback)
    settings = f"{model.name}: consistency ({mode}), {steps} steps, cfg {cfg:g}, seed {seed}"
    return prompt_video(out, model.fps, prompt, settings)
