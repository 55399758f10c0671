"""Shrink a shipped student's LoRA to a lower rank: the best rank-r approximation of each ΔW = B·A.

    python -m fewstep.bench.mlcm.rank IN.safetensors OUT.safetensors --rank 16

Each adapter pair (``*.lora_A.*`` [r0, in, kh, kw], ``*.lora_B.*`` [out, r0, 1, 1] or the 2-D linear shapes)
holds ΔW = B·A (scale α/r = 1, see ``nodes.core.trainer.add_lora``). Its truncated SVD ΔW ≈ U_r S_r V_rᵀ is
the best rank-r approximation in Frobenius norm (Eckart–Young); it is split back into B' = U_r √S_r and
A' = √S_r V_rᵀ, so the new file keeps peft's layout at rank r. Override tensors pass through unchanged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor


def truncate_pair(a: Tensor, b: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """(A', B') of rank ``rank`` with B'·A' the best rank-r approximation of B·A (computed in float64).

    a: [r0, in, *k] (linear: [r0, in]); b: [out, r0, 1, 1] (linear: [out, r0]). Returns tensors of the
    same layout with r0 replaced by ``rank`` (zero-padded when ΔW's rank is lower), in a's dtype.
    """
    r0 = a.shape[0]
    if b.shape[1] != r0:
        raise ValueError(f"LoRA pair mismatch: A has rank {r0}, B has {b.shape[1]} (shapes {tuple(a.shape)}, {tuple(b.shape)})")
    delta = b.reshape(b.shape[0], r0).double() @ a.reshape(r0, -1).double()       # ΔW [out, in·k·k]
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    keep = min(rank, s.shape[0])
    root = s[:keep].sqrt()
    new_b = torch.zeros(b.shape[0], rank, dtype=torch.float64)
    new_a = torch.zeros(rank, delta.shape[1], dtype=torch.float64)
    new_b[:, :keep] = u[:, :keep] * root
    new_a[:keep] = root[:, None] * vh[:keep]
    return (new_a.reshape(rank, *a.shape[1:]).to(a.dtype), new_b.reshape(b.shape[0], rank, *b.shape[2:]).to(b.dtype))


def truncate_lora(tensors: dict[str, Tensor], rank: int) -> dict[str, Tensor]:
    """Every ``lora_A`` / ``lora_B`` pair of ``tensors`` at rank ``rank``; other tensors unchanged."""
    if rank < 1:
        raise ValueError(f"truncate_lora: rank must be >= 1, got {rank}")
    out = {k: v for k, v in tensors.items() if "lora_A" not in k and "lora_B" not in k}
    for key_a in (k for k in tensors if "lora_A" in k):
        key_b = key_a.replace("lora_A", "lora_B")
        if key_b not in tensors:
            raise ValueError(f"truncate_lora: {key_a} has no matching {key_b}")
        out[key_a], out[key_b] = truncate_pair(tensors[key_a], tensors[key_b], rank)
    return out


def main(argv: list[str] | None = None) -> int:
    from safetensors import safe_open
    from safetensors.torch import save_file

    p = argparse.ArgumentParser(prog="python -m fewstep.bench.mlcm.rank", description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--rank", type=int, default=16)
    args = p.parse_args(argv)
    with safe_open(str(args.src), framework="pt") as handle:
        meta = json.loads(handle.metadata()["fewstep"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    meta["lora_rank"] = args.rank
    save_file(truncate_lora(tensors, args.rank), str(args.dst), metadata={"fewstep": json.dumps(meta)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
