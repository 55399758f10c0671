"""The built-in teacher for trainers, and the shipped-student file format every distillation pack uses.

A shipped student is a LoRA (peft) on the built-in teacher UNet, stored as ``<name>.safetensors`` holding the
adapter tensors (fp16) plus "override" tensors (e.g. SLAM's time-embedding bias with γ = 1 folded in), its
recipe as JSON in the ``fewstep`` metadata. :func:`load_student` rebuilds a plain UNet of the teacher's
architecture from it; :func:`shipped_student_model` makes it a MODEL beside the teacher's CLIP and VAE.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file
from torch import nn

from fewstep.nodes.core.train.adapter import UNetAdapter, student_model, unet_of
from fewstep.nodes.core.train.devices import place
from fewstep.nodes.core.train.prompts import PromptPool, procedural_pool
from fewstep.nodes.core.train.vp import DiscreteVPSchedule, VPNet

if TYPE_CHECKING:
    from fewstep.nodes.core.denoiser import Denoiser
    from fewstep.nodes.core.text import TextEncoder
    from fewstep.nodes.core.vae import VAEWrapper

OVERRIDE_PREFIX = "override."
NODES_DIR = Path(__file__).resolve().parents[2]          # fewstep/nodes


def pack_weights_dir(pack: str) -> Path:
    """``fewstep/nodes/<pack>/weights``: where a pack's shipped students live (package data, not an import)."""
    return NODES_DIR / pack / "weights"


def teacher_unet(device: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The built-in teacher's UNet (zoo weights, fp16 on disk)."""
    from fewstep.nodes.zoo.builtin import BUILTIN_CHECKPOINT, _load
    from fewstep.nodes.zoo.models import build_unet

    state, cfg = _load(BUILTIN_CHECKPOINT, None)
    unet = build_unet(cfg["unet"])
    unet.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return place(unet, device, dtype).eval().requires_grad_(False)


def teacher_schedule() -> DiscreteVPSchedule:
    """The built-in teacher's DDPM schedule (its ᾱ_t as the zoo computes it)."""
    from fewstep.nodes.zoo.models import SCHEDULE, alphas_cumprod

    return DiscreteVPSchedule.from_alphas_cumprod(alphas_cumprod(SCHEDULE))


def distillation_setup(minilm: str | None, device: str, prompts: int) -> tuple[VPNet, PromptPool]:
    """What every student-training CLI starts from: the built-in teacher as an eps-VPNet (bf16 on GPUs)
    and a pool of ``prompts`` procedural training captions encoded by the MiniLM text encoder."""
    from fewstep.nodes.zoo.text_encoder import MiniLMTextEncoder

    enc = MiniLMTextEncoder.load(minilm, device)
    unet = teacher_unet(device, torch.bfloat16 if device != "cpu" else torch.float32)
    teacher = VPNet(UNetAdapter(unet), teacher_schedule(), "eps")
    return teacher, procedural_pool(enc, prompts, seed=0, device=device)


def merge_lora(base: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain state dict: ``base`` + ΔW = B·A for each adapter pair (scale α/r = 1, as ``add_lora`` and
    ``bench/mlcm/rank.py`` make them) + the ``override.*`` tensors. Pure tensor math (no peft), float32.

    A: [r, in, *k] (conv: k = kh, kw; linear: none), B: [out, r, 1, 1] or [out, r]; base key = the adapter key
    with ``.lora_A.default`` removed.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)        # ~250 tiny ops: measured 0.06 s on 1 thread vs 2.8 s on 2 (first call, busy VM)
    try:
        return _merge(base, tensors)
    finally:
        torch.set_num_threads(before)


def _merge(base: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = {k: v.float() for k, v in base.items()}
    for key_a in (k for k in tensors if ".lora_A." in k):
        key_b, key_w = key_a.replace(".lora_A.", ".lora_B."), key_a.replace(".lora_A.default", "")
        if key_b not in tensors or key_w not in state:
            raise ValueError(f"student LoRA key {key_a!r} does not fit the teacher (no {key_b!r} or {key_w!r})")
        a, b = tensors[key_a].float(), tensors[key_b].float()
        delta = b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)
        state[key_w] = state[key_w] + delta.reshape(state[key_w].shape)
    for key, value in tensors.items():
        if key.startswith(OVERRIDE_PREFIX):
            if key[len(OVERRIDE_PREFIX):] not in state:
                raise ValueError(f"student override {key!r} names no teacher tensor")
            state[key[len(OVERRIDE_PREFIX):]] = value.float()
    return state


def load_student(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 lean: bool = False) -> nn.Module:
    """A plain UNet (teacher architecture) = teacher + merged LoRA + overrides, from a shipped student file.

    ``lean``: the pure-torch ``nodes.zoo.lean.LeanUNet`` (no diffusers import: the CPU runtime of the
    built-in models) instead of diffusers' UNet2DConditionModel; same weights either way.
    """
    from fewstep.nodes.zoo.builtin import BUILTIN_CHECKPOINT, _load

    base, cfg = _load(BUILTIN_CHECKPOINT, None)
    state = merge_lora(base, load_file(str(path)))
    if lean:
        from fewstep.nodes.zoo.lean import LeanUNet, materialise

        return materialise(lambda: LeanUNet(cfg["unet"]), state, device, dtype)
    from fewstep.nodes.zoo.models import build_unet

    unet = build_unet(cfg["unet"])
    unet.load_state_dict(state, strict=True)
    return nn.Module.to(unet, device=device, dtype=dtype).eval().requires_grad_(False)


def shipped_student_model(path: Path) -> tuple[Denoiser, TextEncoder, VAEWrapper]:
    """(MODEL, CLIP, VAE): the student file ``path`` on the built-in teacher's device, with its CLIP and VAE."""
    from fewstep.app.api import cached_model
    from fewstep.nodes.core.loaders import list_builtin, load_checkpoint

    teacher, clip, vae = load_checkpoint(list_builtin()[0])
    p = next(unet_of(teacher).parameters())
    lean = type(unet_of(teacher)).__name__ == "LeanUNet"          # follow the teacher's runtime
    unet = cached_model(path, p.dtype, p.device, lambda: load_student(path, str(p.device), p.dtype, lean=lean))
    return student_model(teacher, unet, path.name), clip, vae
