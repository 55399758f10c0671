"""TDM on the built-in video model: the DiT as a flow network, the run configuration, the prompt pool, the
student file format.

The built-in video model (``nodes/zoo/video``) is a rectified-flow DiT predicting v = ε − x0 from the timestep
σ·1000, on latents [B, T, 4, 16, 16]. :class:`VideoFlowNet` presents it with the trainers' network convention
``net(x, σ, cond) -> v`` (``cond`` a core ``Conditioning``: token states + their mask), so the same
:func:`~fewstep.nodes.tdm.train.distill_tdm` trains it through ``FlowNet`` views with
:class:`~fewstep.nodes.tdm.flow.TDMFlowLoss` (the flow translation of the TDM losses).

Students are full copies of the DiT (the demo trains full students; the DiT has 0.22 M parameters), a fixed K
each (TDM; the DiT has no free condition slot for TDM-unify's K). They sample with Euler on their own σ's
(``core.video_sampling.sample_flow_euler`` over :func:`~fewstep.nodes.tdm.flow.student_sigma_schedule`), no CFG.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fewstep.nodes.core.train.loop import config_fingerprint
from fewstep.nodes.core.train.prompts import PromptPool
from fewstep.nodes.core.train.vp import Conditioning
from fewstep.nodes.tdm.flow import TDMFlowLoss, flow_student_sigmas
from fewstep.nodes.zoo.video.dit import VideoDiT, VideoDiTConfig
from fewstep.nodes.zoo.video.model import FLOW_MULTIPLIER, VideoModel

MASK = "mask"                      # Conditioning.added_cond_kwargs key of the token mask [B, L] (bool)


class VideoFlowNet(nn.Module):
    """The video DiT as a flow network: ``forward(x [B,T,C,h,w], σ [B], cond, timestep_cond=None) -> v``."""

    def __init__(self, dit: VideoDiT) -> None:
        super().__init__()
        self.dit = dit

    def forward(self, x: Tensor, sigma: Tensor, cond: Conditioning, timestep_cond: Tensor | None = None) -> Tensor:
        if timestep_cond is not None:
            raise ValueError("VideoFlowNet: the video DiT has no timestep condition input (TDM-unify is image-only)")
        mask = (cond.added_cond_kwargs or {}).get(MASK)
        return self.dit(x, sigma.float() * FLOW_MULTIPLIER, cond.hidden_states, mask)


@dataclass(frozen=True)
class TDMVideoConfig:
    """Hyperparameters of one video TDM run (the fields ``distill_tdm`` reads, as :class:`~nodes.tdm.train.TDMConfig`).

    Args:
        steps / batch_size / seed / warmup: the optimisation (one generator + one fake-score update per step).
        lr: the fake score's learning rate; the student's is ``lr · generator_lr_ratio`` (demo: 1/5).
        grad_clip: max grad norm of each network (demo: 1).
        student_steps: K.  shift / top: the student's σ_k = shift(top · k/K) (shift 3: the teacher's schedule).
        guidance: CFG of the real score (the built-in video model samples with 4).
        huber_c / separate / snr_cap: see :class:`~nodes.tdm.flow.TDMFlowLoss`.
        frames: clip length of the training states (the built-in model is trained on 8).
        ema_decay: EMA of the student (0 = off).
    """

    steps: int = 500
    batch_size: int = 16
    lr: float = 5e-4
    generator_lr_ratio: float = 0.2
    warmup: int = 0
    grad_clip: float = 1.0
    seed: int = 0
    student_steps: int = 4
    shift: float = 3.0
    top: float = 1.0
    guidance: float = 4.0
    huber_c: float = 1e-3
    separate: bool = True
    snr_cap: float = 5.0
    frames: int = 8
    ema_decay: float = 0.0
    unify: bool = False             # fixed by design (read by distill_tdm)
    lora_rank: int = 0              # full students (read by build_run)
    fake_lora_rank: int = 0

    def __post_init__(self) -> None:
        checks = [(self.steps >= 1, "steps >= 1"), (self.batch_size >= 1, "batch_size >= 1"),
                  (1 <= self.student_steps <= 8, "student_steps in 1..8"), (self.shift > 0, "shift > 0"),
                  (0.0 < self.top <= 1.0, "top in (0, 1]"), (self.frames >= 1, "frames >= 1"),
                  (self.lr >= 0 and self.generator_lr_ratio > 0, "lr >= 0 and generator_lr_ratio > 0"),
                  (0.0 <= self.ema_decay < 1.0, "ema_decay in [0, 1)"),
                  (not self.unify and self.lora_rank == 0 and self.fake_lora_rank == 0,
                   "unify off and full networks (the video trainer has neither a steps input nor LoRA)")]
        bad = [what for ok, what in checks if not ok]
        if bad:
            raise ValueError(f"TDMVideoConfig: need {', '.join(bad)} (got {self})")
        sig = [*flow_student_sigmas(self.student_steps, self.shift, self.top), 0.0]
        if min(a - b for a, b in zip(sig, sig[1:], strict=False)) <= self.loss().tau_margin:
            raise ValueError(f"TDMVideoConfig: the student's steps {sig} leave an interval no wider than the "
                             f"τ margin {self.loss().tau_margin}; use fewer steps or a smaller shift")

    def loss(self) -> TDMFlowLoss:
        return TDMFlowLoss(guidance=self.guidance, huber_c=self.huber_c, shift=self.shift, top=self.top,
                           separate=self.separate, snr_cap=self.snr_cap)

    def fingerprint(self) -> str:
        """8 hex digits naming this configuration (the run folder; a resume needs the same one)."""
        return config_fingerprint(asdict(self))


# The demo's ratios (generator lr / 5 with full students, grad norm 1, Huber 1e-3, separate intervals) on the
# 0.22 M-parameter DiT; fake-score lr 5e-4 (half the rate the DiT was trained with from scratch) so that the fake
# score keeps up with the student within the few hundred steps of a 5-minute CPU run; CFG 4 is the teacher's own.
VIDEO_PRESETS: dict[str, TDMVideoConfig] = {
    "tdm_video":   TDMVideoConfig(),
    "tdm_video_2": TDMVideoConfig(student_steps=2),
}


def pad_tokens(states: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Token states [B, L, D] and mask [B, L] zero-padded to ``length`` tokens (masked out)."""
    pad = length - states.shape[1]
    if pad <= 0:
        return states, mask
    return (torch.cat([states, states.new_zeros(states.shape[0], pad, states.shape[2])], 1),
            torch.cat([mask, mask.new_zeros(mask.shape[0], pad)], 1))


def video_conditioning(states: Tensor, mask: Tensor) -> Conditioning:
    """Token states [B, L, D] + mask [B, L] as a row-indexable core ``Conditioning``."""
    return Conditioning(states.float(), {MASK: mask.bool()})


def video_prompt_pool(model: VideoModel, prompts: list[str], frames: int) -> PromptPool:
    """The encoded prompts (and the empty prompt for CFG, padded to the same token count) as a ``PromptPool``
    whose latent shape is the clip's [T, C, h, w]."""
    ctx, mask = model.encode_text(prompts)                                      # [N, L, 384], [N, L]
    unc, umask = model.encode_text([""])                                        # [1, L0, 384]
    length = max(ctx.shape[1], unc.shape[1])
    ctx, mask = pad_tokens(ctx, mask, length)
    unc, umask = pad_tokens(unc, umask, length)
    c = model.dit.config
    dev = model.device
    return PromptPool(cond=video_conditioning(ctx, mask).to(dev), uncond=video_conditioning(unc, umask).to(dev),
                      prompts=list(prompts), latent_shape=(frames, c.latent_channels, c.latent_size, c.latent_size))


def trainable_copy(dit: VideoDiT) -> VideoFlowNet:
    """A float32 trainable copy of the DiT (student or fake score: the teacher's weights)."""
    net = VideoDiT(dit.config)
    net.load_state_dict(dit.state_dict())
    p = next(dit.parameters())
    return VideoFlowNet(net.to(p.device).float().train().requires_grad_(True))


# ----------------------------------------------------------------------------- student files
def save_video_student(path: Path, dit: VideoDiT, meta: dict[str, Any]) -> Path:
    """The student DiT (fp16) with ``meta`` (student_steps, shift, top, teacher, the DiT config ...) in the header."""
    from safetensors.torch import save_file

    state = {k: v.detach().half().contiguous().cpu() for k, v in dit.state_dict().items()}
    info = {**meta, "dit": asdict(dit.config)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"fewstep": json.dumps(info)})
    return path


def video_student_meta(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["fewstep"])


def load_video_student(path: Path, device: str | torch.device = "cpu") -> tuple[VideoDiT, dict[str, Any]]:
    """(student DiT in float32, eval, no grad; its metadata) from a student file."""
    from safetensors.torch import load_file

    meta = video_student_meta(path)
    dit = VideoDiT(VideoDiTConfig(**meta["dit"]))
    dit.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    return dit.eval().requires_grad_(False).to(device), meta


def student_video_model(teacher: VideoModel, dit: VideoDiT, meta: dict[str, Any], name: str) -> VideoModel:
    """The teacher's bundle (VAE, text encoder, fps) around the student DiT; ``info["tdm"]`` holds K, shift, top (and the training steps)."""
    p = next(teacher.dit.parameters())
    dit = dit.to(p.device, p.dtype).eval().requires_grad_(False)
    tdm = {k: meta[k] for k in ("student_steps", "shift", "top", "train_steps") if k in meta}
    return replace(teacher, dit=dit, name=name, info={**teacher.info, "tdm": tdm})


def student_schedule(model: VideoModel, steps: int | None = None) -> tuple[int, float, float]:
    """(K, shift, top) to sample ``model`` with: a TDM student's own; ``steps`` must equal its K when given."""
    tdm = model.info.get("tdm")
    if tdm is None:
        raise ValueError(f"{model.name} is not a TDM video student (no 'tdm' entry in its info); "
                         "sample teachers with Text to Video")
    k = int(tdm["student_steps"])
    if steps not in (None, 0, k):
        raise ValueError(f"this TDM video student was trained for {k} steps, not {steps} "
                         f"(train another with student_steps = {steps})")
    return k, float(tdm.get("shift", 3.0)), float(tdm.get("top", 1.0))
