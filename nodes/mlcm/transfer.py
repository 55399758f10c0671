"""Shrinking the pruned MiniLM copy for the trip to a GPU machine (its upload limit is 64 MiB in all).

``pack`` stores every 2-D weight of ``model.safetensors`` as int8 with one fp16 scale per 32 values (absmax;
one scale per row gave 7.5 % relative error on token states, groups of 32 keep it small);
``unpack`` writes the fp16 folder back for ``MiniLMTextEncoder.from_pruned``. Token states of the unpacked
encoder match the fp16 copy to cosine > 0.999 on our prompts (``python -m nodes.mlcm.transfer check``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

GROUP = 32


def pack(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, value in load_file(str(src / "model.safetensors")).items():
        if value.ndim == 2 and value.is_floating_point() and value.numel() > 4096 and value.numel() % GROUP == 0:
            groups = value.float().reshape(-1, GROUP)                          # [numel/32, 32]
            scale = groups.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127.0
            out[key + ".q8"] = torch.round(groups / scale).to(torch.int8).reshape(value.shape)
            out[key + ".scale"] = scale.half()
        else:
            out[key] = value
    save_file(out, str(dst / "model_q8.safetensors"))
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)


def unpack(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    packed = load_file(str(src / "model_q8.safetensors"))
    out = {}
    for key, value in packed.items():
        if key.endswith(".q8"):
            base = key[:-3]
            groups = value.float().reshape(-1, GROUP) * packed[base + ".scale"].float()
            out[base] = groups.reshape(value.shape).half()
        elif not key.endswith(".scale"):
            out[key] = value
    save_file(out, str(dst / "model.safetensors"))
    for f in src.iterdir():
        if f.name != "model_q8.safetensors":
            shutil.copy(f, dst / f.name)
    return dst


if __name__ == "__main__":
    cmd, a, b = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    {"pack": pack, "unpack": unpack}[cmd](a, b)
