"""PSO adapters on a few-step student UNet: inject, export (fp16 LoRA file), load back as a plain merged UNet.

A shipped PSO file holds only the LoRA tensors (rank 16, fp16: ~2.2 MB for the built-in student) plus JSON metadata
naming its base, the shipped MLCM student ``fewstep/nodes/mlcm/weights/fewstep-mlcm-student.safetensors``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fewstep.nodes.core.train.adapter import LORA_TARGETS, UNetAdapter
from fewstep.nodes.core.train.devices import place
from fewstep.nodes.core.train.loop import add_lora, merged_state_dict
from fewstep.nodes.core.train.vp import DiscreteVPSchedule, VPNet
from fewstep.nodes.pso.policy import reference_of

BASE_STUDENT = "fewstep-mlcm-student.safetensors"
log = logging.getLogger("fewstep.pso.students")


def file_sha256(path: Path) -> str:
    """SHA-256 of a weights file (an adapter records its base's, since shipped students get retrained in place)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def lora_policy(unet: nn.Module, schedule: DiscreteVPSchedule, rank: int, prediction_type: str = "eps"
                ) -> tuple[VPNet, VPNet]:
    """(policy, reference): an fp32 copy of ``unet`` with fresh LoRA adapters (B = 0, so policy = reference at
    step 0), and the same network with the adapters disabled."""
    if rank < 1:
        raise ValueError(f"PSO trains LoRA adapters: lora_rank must be >= 1, got {rank}")
    net = UNetAdapter(add_lora(copy.deepcopy(unet).float(), rank, LORA_TARGETS))
    policy = VPNet(net, schedule, prediction_type)
    return policy, reference_of(policy)


def lora_tensors(net: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of a :func:`lora_policy` network (UNet key names), fp16 on CPU."""
    unet = net.unet if isinstance(net, UNetAdapter) else net
    return {k: v.detach().half().cpu() for k, v in unet.state_dict().items() if "lora_" in k}


def save_lora(path: Path, net: nn.Module, meta: dict[str, Any]) -> None:
    """Write the adapters of ``net`` with ``meta`` (base file, rank, targets, recipe) as safetensors metadata."""
    save_file(lora_tensors(net), str(path), metadata={"fewstep": json.dumps(meta)})


def read_meta(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get("fewstep")
    if raw is None:
        raise ValueError(f"{path}: not a fewstep PSO adapter file (no 'fewstep' metadata)")
    return json.loads(raw)


def merge_lora(base: nn.Module, tensors: dict[str, torch.Tensor], rank: int, name: str = "adapter"
               ) -> nn.Module:
    """A plain UNet = ``base`` with the LoRA ``tensors`` merged in (same architecture, no peft layers)."""
    unet = add_lora(copy.deepcopy(base).float(), rank, LORA_TARGETS)
    missing, unexpected = unet.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    if unexpected or any("lora_" in k for k in missing):
        raise ValueError(f"{name}: adapter tensors do not fit the base UNet ({unexpected[:2]} / "
                         f"{[k for k in missing if 'lora_' in k][:2]})")
    plain = copy.deepcopy(base).float()
    plain.load_state_dict(merged_state_dict(unet), strict=True)
    p = next(base.parameters())
    return place(plain, p.device, p.dtype).eval().requires_grad_(False)


def load_pso_unet(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """The PSO-tuned student from a shipped adapter file: its base MLCM student + the merged adapters."""
    from fewstep.nodes.core.train.builtin import load_student, pack_weights_dir

    path = Path(path)
    meta = read_meta(path)
    base_path = pack_weights_dir("mlcm") / meta["base"]        # the shipped MLCM student it was tuned from
    if meta.get("base_sha256") and file_sha256(base_path) != meta["base_sha256"]:
        log.warning("%s was trained on another version of %s (sha256 %s...); its card's numbers do not apply to the "
                    "current base: retrain it with python -m fewstep.bench.pso.gpu_run", path.name, meta["base"],
                    meta["base_sha256"][:12])
    base = load_student(base_path, "cpu", torch.float32)
    return place(merge_lora(base, load_file(str(path)), int(meta["lora_rank"]), path.name), device, dtype)


def merged_unet(net: nn.Module, like: nn.Module) -> nn.Module:
    """The trained :func:`lora_policy` network as a plain UNet (adapters merged) in ``like``'s dtype / device."""
    unet = net.unet if isinstance(net, UNetAdapter) else net
    plain = copy.deepcopy(like).float()
    plain.load_state_dict(merged_state_dict(unet), strict=True)
    p = next(like.parameters())
    return place(plain, p.device, p.dtype).eval().requires_grad_(False)


def weights_dir() -> Path:
    """Where the shipped PSO adapters live (package data)."""
    return Path(__file__).resolve().parent / "weights"


def shipped_adapters() -> list[str]:
    """File names of the shipped PSO adapters."""
    return sorted(p.name for p in weights_dir().glob("fewstep-pso-*.safetensors"))


def load_adapter_model(name: str) -> tuple[Any, Any, Any]:
    """(MODEL, CLIP, VAE): a shipped PSO adapter merged into its MLCM student, with the teacher's CLIP and VAE."""
    from fewstep.app.api import cached_model
    from fewstep.nodes.core.train.adapter import student_model, unet_of
    from fewstep.nodes.core.train.builtin import pack_weights_dir, shipped_student_model

    if name not in shipped_adapters():
        raise ValueError(f"unknown PSO adapter {name!r}; shipped: {shipped_adapters()}")
    path = weights_dir() / name
    base_model, clip, vae = shipped_student_model(pack_weights_dir("mlcm") / read_meta(path)["base"])
    p = next(unet_of(base_model).parameters())
    unet = cached_model(path, p.dtype, p.device, lambda: load_pso_unet(path, str(p.device), p.dtype))
    return student_model(base_model, unet, name), clip, vae
