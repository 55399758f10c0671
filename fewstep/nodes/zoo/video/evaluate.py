"""Quality of generated clips on held-out captions.

Four numbers per setting (50-step teacher, its own 10- and 5-step Euler, ...):

- ``frame_attribute_accuracy``: the zoo's attribute probe (``builtin.Probe``) on every frame, colour and
  shape of the one object against the caption (mean of colour and shape hits, as ``Probe.evaluate``).
  The probe was trained on objects within 2 px of a grid-cell centre; a moving object sits anywhere,
  where it reads only 51% of real frames (120 held-out clips). Each frame is therefore first shifted so
  the tracked object (centroid of the caption colour's mask) sits at the centre cell's centre
  (:func:`centre_on_object`): 100% on the same real frames;
- ``motion_accuracy``: the analytic tracker (``tracker``) classifies the rendered trajectory of the
  caption's colour; a hit when it names the caption's motion;
- ``fd_effnet_frames``: FD-EffNet (``nodes.core.metrics``) of all generated frames against the frames of
  real renders of the same captions (needs the EfficientNet-Lite0 package; skipped when absent);
- ``fd_clip3d``: the temporal Fréchet distance of ``features.ClipFeatureNet`` features, generated clips
  against real renders of the same captions (new random starts).

``evaluate_reference`` gives the same numbers for a second set of real renders: the floor of each metric.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from fewstep.nodes.zoo import data
from fewstep.nodes.zoo.video import clips, tracker
from fewstep.nodes.zoo.video.features import ClipFeatureNet, temporal_fd


def heldout_specs(n: int, frames: int = clips.FRAMES, seed: int = 0) -> list[clips.ClipSpec]:
    """``n`` held-out clip specs (captions cycled, starts random)."""
    return clips.make_split("heldout", n, frames, seed)


def render_specs(specs: list[clips.ClipSpec]) -> torch.Tensor:
    """uint8 clips ``[N, T, 64, 64, 3]``."""
    return torch.from_numpy(np.stack([clips.render_clip(s) for s in specs]))


def _as_float(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    if frames.dtype == torch.uint8:
        return frames.cpu().numpy()
    return (frames.detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy()


def centre_on_object(clip: np.ndarray, colour: str) -> np.ndarray:
    """uint8 frames ``[T, 64, 64, 3]`` shifted (background fill) so the ``colour`` object's centroid lands on
    pixel (32, 32); frames where the tracker finds no such object stay as they are."""
    centres = tracker.track(clip, colour)
    out = np.empty_like(clip)
    out[:] = np.array(data.BACKGROUND, dtype=np.uint8)
    size = clip.shape[1]
    for t, (cx, cy) in enumerate(centres):
        if np.isnan(cx):
            out[t] = clip[t]
            continue
        dx, dy = int(round(size / 2 - cx)), int(round(size / 2 - cy))
        src = clip[t, max(0, -dy):size - max(0, dy), max(0, -dx):size - max(0, dx)]
        out[t, max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def frame_attribute_accuracy(probe: Any, frames: torch.Tensor, specs: list[clips.ClipSpec]) -> dict[str, float]:
    """Probe accuracy over every frame of every clip, each frame centred on the tracked object (targets:
    the caption's object in the centre cell)."""
    u8 = _to_uint8(frames)
    centred = np.stack([centre_on_object(c, s.colour) for c, s in zip(u8, specs, strict=True)])
    scenes = [data.Scene((data.Obj(s.shape, s.colour, s.size, 1, 1),), "single") for s in specs for _ in range(s.frames)]
    flat = torch.from_numpy(centred).flatten(0, 1).float() / 255.0
    if len(scenes) != len(flat):
        raise ValueError(f"frame_attribute_accuracy: {len(flat)} frames but {len(scenes)} target frames")
    out = probe.evaluate(flat, scenes)
    return {"frame_attribute_accuracy": out["attribute_accuracy"], "frame_colour_accuracy": out["colour_accuracy"],
            "frame_shape_accuracy": out["shape_accuracy"]}


def motion_accuracy(frames: torch.Tensor, specs: list[clips.ClipSpec]) -> float:
    """Fraction of clips whose tracked motion is the caption's motion."""
    hits = [tracker.motion_of(f, s.colour) == s.motion for f, s in zip(frames, specs, strict=True)]
    return float(np.mean(hits))


def evaluate_clips(frames: torch.Tensor, specs: list[clips.ClipSpec], *, probe: Any, featnet: ClipFeatureNet,
                   reference: torch.Tensor, effnet: Any = None) -> dict[str, float]:
    """All metrics of clips ``frames`` ``[N, T, 64, 64, 3]`` generated for ``specs`` against ``reference``."""
    out = frame_attribute_accuracy(probe, frames, specs)
    out["motion_accuracy"] = motion_accuracy(frames, specs)
    out["fd_clip3d"] = temporal_fd(featnet, frames, reference)
    if effnet is not None:
        from fewstep.nodes.core.metrics import fd_effnet

        out["fd_effnet_frames"] = fd_effnet(_as_float(frames).flatten(0, 1), _as_float(reference).flatten(0, 1), effnet)
    return out


def evaluate_reference(specs: list[clips.ClipSpec], reference: torch.Tensor, *, probe: Any, featnet: ClipFeatureNet,
                       effnet: Any = None, seed: int = 1) -> dict[str, float]:
    """The metrics of real renders (a second draw of starts for the same captions) against ``reference``."""
    import random

    rng = random.Random(f"reference:{seed}")
    again = [clips.sample_start(s.shape, s.colour, s.size, s.motion, s.frames, rng) for s in specs]
    return evaluate_clips(render_specs(again), again, probe=probe, featnet=featnet, reference=reference, effnet=effnet)


def generate_clips(model: Any, specs: list[clips.ClipSpec], *, steps: int, shift: float, cfg: float, seed: int = 0,
                   batch: int = 16, sampler: str = "flow_euler") -> tuple[torch.Tensor, float]:
    """One clip per spec (its caption), batches seeded ``seed + first index``: (frames ``[N, T, 64, 64, 3]``
    float in 0..1, seconds per clip)."""
    from fewstep.nodes.zoo.video.model import generate

    t0, parts = time.time(), []
    for i in range(0, len(specs), batch):
        chunk = specs[i:i + batch]
        frames, _ = generate(model, [s.caption() for s in chunk], frames=chunk[0].frames, steps=steps, shift=shift,
                             cfg=cfg, seed=seed + i, sampler=sampler)
        parts.append(frames)
    return torch.cat(parts), (time.time() - t0) / max(len(specs), 1)


def evaluate_model(model: Any, specs: list[clips.ClipSpec], *, steps: int, shift: float, cfg: float,
                   probe: Any, featnet: ClipFeatureNet, reference: torch.Tensor, effnet: Any = None,
                   seed: int = 0, batch: int = 16, sampler: str = "flow_euler") -> dict[str, float]:
    """Generate one clip per spec with ``model`` (:func:`generate_clips`) and measure it."""
    frames, seconds = generate_clips(model, specs, steps=steps, shift=shift, cfg=cfg, seed=seed, batch=batch,
                                     sampler=sampler)
    out = evaluate_clips(frames, specs, probe=probe, featnet=featnet, reference=reference, effnet=effnet)
    return {**out, "steps": steps, "shift": shift, "cfg": cfg, "sampler": sampler, "clips": len(specs),
            "seconds_per_clip": seconds}
