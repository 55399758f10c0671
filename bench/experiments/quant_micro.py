# ruff: noqa: E401, E701, E702, E731, T201, B023  -- a one-off GPU experiment kept as it ran (results: docs/benchmarks.md)
"""Micro-bench: activation quantize kernels on SDXL-size activations (GB/s), flat vs 2-D vs PyTorch."""
import json
import os

import torch

from fewstep.kernels import lowbit


def ms(fn, n=20):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(True), torch.cuda.Event(True)
    a.record()
    for _ in range(n): fn()
    b.record(); torch.cuda.synchronize()
    return a.elapsed_time(b) / n

def main() -> None:
    res = {}
    s = torch.tensor(0.05, device="cuda")
    for shape in [(8, 4096, 640), (8, 1024, 1280), (8, 4096, 2560), (1, 4096, 640)]:
        x = torch.randn(shape, device="cuda", dtype=torch.float16)
        gb = x.numel() * 3 / 1e9
        flat = ms(lambda: lowbit.quantize_act_triton(x, s, 8))
        strided = x.transpose(1, 2).contiguous().transpose(1, 2)      # same values, 2-D kernel path
        twod = ms(lambda: lowbit.quantize_act_triton(strided, s, 8))
        torch_ms = ms(lambda: torch.clamp(torch.round(x.float() / s), -127, 127).to(torch.int8))
        ok = torch.equal(lowbit.quantize_act_triton(x, s, 8), lowbit.quantize_act_triton(strided, s, 8))
        res[str(shape)] = {"flat_ms": round(flat, 4), "flat_GBps": round(gb / flat * 1e3), "2d_strided_ms": round(twod, 4),
                           "torch_ms": round(torch_ms, 4), "flat_equals_2d": ok}
        print(shape, res[str(shape)], flush=True)
    json.dump(res, open(os.path.join(os.environ.get("OUT", "."), "quant_micro.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
