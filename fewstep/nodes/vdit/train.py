"""Training runs of Efficient-vDiT's stages 1 and 3 on a VIDEO_MODEL, and the shipped-student file format.

Runs go through core's resumable loop (``nodes.core.train.loop.fit``): step n draws everything from a
generator seeded by (seed, n), checkpoints land in a run folder named by the configuration, a re-run with
the same settings resumes. Students are written as fp16 safetensors with a JSON beside them (the DiT config,
the segments, the per-layer tile masks, the recipe).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fewstep.nodes.core.train.distributed import local_batch_size
from fewstep.nodes.core.train.flow_consistency import FlowSegments
from fewstep.nodes.core.train.loop import (
    EMA,
    Checkpointer,
    FitSpec,
    TrainState,
    config_fingerprint,
    fit,
    warmup_lr,
)
from fewstep.nodes.vdit.distill import MLCDVideoLoss, SparseKDLoss, VideoBatch
from fewstep.nodes.zoo.video import clips as clip_data
from fewstep.nodes.zoo.video.model import VideoModel

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class MLCDConfig:
    """Stage 1 hyperparameters.

    Args:
        steps / batch_size / lr / warmup / grad_clip / seed: AdamW (weight decay 0), linear warm-up.
        base_steps / segments / shift: the teacher grid and its segments (``FlowSegments``).
        guidance: teacher CFG scale distilled into the student.
        target: "ema" (Heek et al.'s EMA target, Efficient-vDiT) or "online" (stop-gradient student, MLCM).
        ema_decay: the target's decay.
        state_source / state_stride: see ``MLCDVideoLoss``.
        pool_clips / frames: training captions drawn (and real clips rendered for state_source "real").
    """

    steps: int = 400
    batch_size: int = 8
    lr: float = 1e-4
    warmup: int = 20
    grad_clip: float = 1.0
    seed: int = 0
    base_steps: int = 50
    segments: int = 10
    shift: float = 3.0
    guidance: float = 4.0
    target: str = "ema"
    ema_decay: float = 0.95
    state_source: str = "teacher"
    state_stride: int = 5
    pool_clips: int = 256
    frames: int = clip_data.FRAMES

    def __post_init__(self) -> None:
        if self.target not in ("ema", "online"):
            raise ValueError(f"MLCD target must be 'ema' or 'online', got {self.target!r}")
        if self.steps < 1 or self.batch_size < 1 or self.pool_clips < 1:
            raise ValueError("MLCD: steps, batch_size and pool_clips must be >= 1")
        self.flow_segments()                                         # validates base_steps / segments

    def flow_segments(self) -> FlowSegments:
        return FlowSegments(self.base_steps, self.segments, self.shift)

    def fingerprint(self) -> str:
        return config_fingerprint(asdict(self))


@dataclass(frozen=True)
class KDConfig:
    """Stage 3 hyperparameters (optimisation as :class:`MLCDConfig`).

    Args:
        attention_weight: weight of the per-layer attention-output term.
        state_source: "student" (the dense student's sampling states) or "real" (noised real clips).
        segments / shift / base_steps: the MLCD student's (read from its info when trained by a node).
    """

    steps: int = 200
    batch_size: int = 8
    lr: float = 2e-5                 # 1e-4 moved the sparse student away from the dense one (train_students.py)
    warmup: int = 10
    grad_clip: float = 1.0
    seed: int = 0
    base_steps: int = 50
    segments: int = 10
    shift: float = 3.0
    attention_weight: float = 1.0
    state_source: str = "student"
    pool_clips: int = 256
    frames: int = clip_data.FRAMES

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.pool_clips < 1:
            raise ValueError("KD: steps, batch_size and pool_clips must be >= 1")
        self.flow_segments()

    def flow_segments(self) -> FlowSegments:
        return FlowSegments(self.base_steps, self.segments, self.shift)

    def fingerprint(self) -> str:
        return config_fingerprint(asdict(self))


@dataclass
class VideoPool:
    """The training captions' token states (and real clip latents), drawn from per step.

    context ``[P, L, 384]`` / mask ``[P, L]`` of P captions, uncond ``[1, L0, 384]``, latents ``[P, T, C, h, w]``
    or None."""

    context: Tensor
    mask: Tensor
    uncond: Tensor
    uncond_mask: Tensor
    latent_shape: tuple[int, ...]
    latents: Tensor | None = None

    def batch(self, n: int, generator: torch.Generator) -> VideoBatch:
        idx = torch.randint(0, len(self.context), (n,), generator=generator, device=generator.device)
        idx = idx.to(self.context.device)
        return VideoBatch(self.context[idx], self.mask[idx], self.uncond, self.uncond_mask, (n, *self.latent_shape),
                          generator, None if self.latents is None else self.latents[idx])


def make_pool(model: VideoModel, count: int, frames: int, seed: int, real: bool) -> VideoPool:
    """``count`` training clips (train-split captions, ``clips.make_split``): their captions' tokens, and when
    ``real`` the clips rendered and encoded by the model's VAE."""
    specs = clip_data.make_split("train", count, frames, seed)
    context, mask = model.encode_text([s.caption() for s in specs])
    uncond, umask = model.encode_text([""])
    cfg = model.dit.config
    latents = None
    if real:
        from fewstep.nodes.zoo.video.evaluate import render_specs

        latents = torch.cat([model.encode_frames(render_specs(specs[i:i + 32])) for i in range(0, count, 32)])
    dev = model.device
    return VideoPool(context.to(dev), mask.to(dev), uncond.to(dev), umask.to(dev),
                     (frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size),
                     None if latents is None else latents.to(dev))


def _trainable_copy(dit: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(dit).float().train().requires_grad_(True)


def _step_fn(loss_fn: Any, student: torch.nn.Module, teacher: torch.nn.Module, target: torch.nn.Module | None,
             pool: VideoPool, batch_size: int) -> Any:
    def run(step: int, gen: torch.Generator) -> Tensor:
        batch = pool.batch(local_batch_size(batch_size), gen)        # this rank's share of the global batch
        return loss_fn(student, batch, teacher=teacher, target=target).mean()
    return run


def train_mlcd(model: VideoModel, cfg: MLCDConfig, *, checkpointer: Checkpointer | None = None,
               max_seconds: float | None = None, pool: VideoPool | None = None) -> tuple[VideoModel, TrainState]:
    """Distil ``model`` (the teacher) into a dense few-step student; returns the student VIDEO_MODEL (the EMA
    weights when ``cfg.target == "ema"``) and the run's state (losses, resumed step)."""
    teacher = model.dit.eval().requires_grad_(False)
    pool = pool or make_pool(model, cfg.pool_clips, cfg.frames, cfg.seed, cfg.state_source == "real")
    student = _trainable_copy(teacher)
    target = ema = None
    if cfg.target == "ema":
        target = copy.deepcopy(student).eval()
        ema = EMA(student, target, cfg.ema_decay)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    loss_fn = MLCDVideoLoss(cfg.flow_segments(), cfg.guidance, cfg.state_source, cfg.state_stride)
    spec = FitSpec(total_steps=cfg.steps, seed=cfg.seed, lr_at=warmup_lr(cfg.lr, cfg.warmup), grad_clip=cfg.grad_clip,
                   device=str(model.device), checkpointer=checkpointer, max_seconds=max_seconds,
                   meta={"vdit_mlcd": asdict(cfg), "teacher": model.name})
    state = fit(student, opt, _step_fn(loss_fn, student, teacher, target, pool, cfg.batch_size), spec,
                target=target, ema=ema)
    out = (target if target is not None else student).eval().requires_grad_(False)
    info = {"vdit_stage": "mlcd", "segments": cfg.segments, "base_steps": cfg.base_steps, "shift": cfg.shift,
            "cfg_distilled": cfg.guidance, "teacher": model.name, "train_steps": state.step}
    return student_model(model, out, f"vdit-mlcd ({state.step} steps)", info), state


def train_kd(sparse: VideoModel, dense: VideoModel, cfg: KDConfig, *, checkpointer: Checkpointer | None = None,
             max_seconds: float | None = None, pool: VideoPool | None = None) -> tuple[VideoModel, TrainState]:
    """Stage 3: train ``sparse`` (tile-sparse DiT, initialised from the MLCD student) to match ``dense``."""
    teacher = dense.dit.eval().requires_grad_(False)
    pool = pool or make_pool(dense, cfg.pool_clips, cfg.frames, cfg.seed, cfg.state_source == "real")
    student = _trainable_copy(sparse.dit)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    loss_fn = SparseKDLoss(cfg.flow_segments(), cfg.attention_weight, cfg.state_source)
    masks = [None if m is None else int(m) for m in sparse.info.get("tile_masks", [])]
    spec = FitSpec(total_steps=cfg.steps, seed=cfg.seed, lr_at=warmup_lr(cfg.lr, cfg.warmup), grad_clip=cfg.grad_clip,
                   device=str(dense.device), checkpointer=checkpointer, max_seconds=max_seconds,
                   meta={"vdit_kd": asdict(cfg), "dense": dense.name, "masks": masks})
    state = fit(student, opt, _step_fn(loss_fn, student, teacher, None, pool, cfg.batch_size), spec)
    info = {**sparse.info, "vdit_stage": "kd", "kd_steps": state.step, "tile_masks": masks}
    return student_model(sparse, student.eval().requires_grad_(False), f"vdit-kd ({state.step} steps)", info), state


def student_model(like: VideoModel, dit: torch.nn.Module, name: str, info: dict[str, Any]) -> VideoModel:
    """A VIDEO_MODEL sharing ``like``'s VAE and text encoder, with ``dit`` on ``like``'s device."""
    dit = dit.to(like.device)
    return dataclasses.replace(like, dit=dit, name=name, info={**like.info, **info})


# ---------------------------------------------------------------------------------------------
# Shipped students
# ---------------------------------------------------------------------------------------------


def save_student(model: VideoModel, path: Path | str, recipe: dict[str, Any]) -> Path:
    """fp16 safetensors at ``path`` + ``path.json``: the DiT config, the student info (segments, shift,
    distilled CFG, per-layer tile masks) and ``recipe``."""
    from safetensors.torch import save_file

    from fewstep.nodes.zoo.video.dit import config_dict

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().half().contiguous() for k, v in model.dit.state_dict().items()}, str(path))
    keys = ("vdit_stage", "segments", "base_steps", "shift", "cfg_distilled", "tile_masks", "search_tolerance", "teacher")
    meta = {"kind": "vdit-student", "dit": config_dict(model.dit.config), "fps": model.fps,
            **{k: model.info[k] for k in keys if k in model.info}, "recipe": recipe}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return path


def shipped_students(root: Path | None = None) -> list[str]:
    """File names of the students in the pack's ``weights/``."""
    root = root or WEIGHTS_DIR
    return sorted(p.name for p in root.glob("fewstep-vdit-*.safetensors") if p.with_suffix(".json").is_file())


def load_student(name: str, base: VideoModel, root: Path | None = None, impl: str = "gathered") -> VideoModel:
    """A shipped student: ``base``'s VAE and text encoder, the student's DiT with its tile masks applied."""
    from safetensors.torch import load_file

    from fewstep.nodes.vdit.attention import with_layer_masks
    from fewstep.nodes.zoo.video.dit import VideoDiT, VideoDiTConfig

    if "/" in name or "\\" in name or not name.endswith(".safetensors"):
        raise ValueError(f"load_student: {name!r} is not a file name of the pack's weights/")
    path = (root or WEIGHTS_DIR) / name
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("kind") != "vdit-student":
        raise ValueError(f"{path.with_suffix('.json')} is not an Efficient-vDiT student")
    dit = VideoDiT(VideoDiTConfig(**meta["dit"]))
    dit.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    masks = meta.get("tile_masks")
    if masks:
        dit = with_layer_masks(dit, masks, impl)
    info = {k: v for k, v in meta.items() if k not in ("kind", "dit", "recipe", "fps")}
    return student_model(base, dit.eval().requires_grad_(False).to(base.device), name, info)
