# ruff: noqa: E401, E701, E702, E731, T201, B023  -- a one-off GPU experiment kept as it ran (results: docs/benchmarks.md)
"""Experiment: cuDNN benchmark_limit=0 and PyTorch TunableOp (cuBLASLt GEMM autotuning) on the prepared SD1.5 UNet."""
import copy
import json
import os
import time
import traceback

import torch

from fewstep.bench.core import sampling as B
from fewstep.nodes.core.fastpath import prepare_module


def main() -> None:
    OUT = os.environ.get("OUT", "/tmp/out")
    T0 = time.time()
    res = {}
    dev = "cuda"
    peak = B.matmul_tflops(dev); res["peak"] = peak
    arch = B.archs(False)["sd15"]
    m = B.build(arch, dev, torch.float16)
    original = m.unet
    for batch in (8, 1):
        m.unet = original
        with torch.inference_mode():
            fl = B.flops_of(B.unet_call(m, batch))
        for name in ("base", "limit0", "tunable", "both", "base_again"):
            key = f"sd15_b{batch}_{name}"
            try:
                torch.backends.cudnn.benchmark_limit = 0 if name in ("limit0", "both") else 10
                tun = name in ("tunable", "both")
                if tun:
                    torch.cuda.tunable.enable(True)
                    torch.cuda.tunable.tuning_enable(True)
                    torch.cuda.tunable.set_filename(f"{OUT}/tunableop_b{batch}.csv")
                    torch.cuda.tunable.set_max_tuning_duration(30)
                else:
                    torch.cuda.tunable.enable(False)
                m.unet = copy.deepcopy(original)
                prepare_module(m.unet)
                t = time.time()
                ms = B.raw_graph_ms(B.unet_call(m, batch), dev, 20)
                res[key] = {"ms": round(ms, 3), "pct": round(100 * fl / ms / 1e9 / peak, 1), "capture_s": round(time.time() - t, 1)}
            except Exception as e:
                res[key] = {"error": f"{type(e).__name__}: {e}"[:600]}
                traceback.print_exc()
            print(key, res[key], f"t={time.time()-T0:.0f}s", flush=True)
            m.unet = None; torch.cuda.empty_cache()
            json.dump(res, open(f"{OUT}/exp9.json", "w"), indent=1)
    print("DONE")


if __name__ == "__main__":
    main()
