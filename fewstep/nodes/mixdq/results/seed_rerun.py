"""Re-evaluate every row of quality_student_cpu_run3.json with another initial-noise seed (probe scores reused,
so the same allocations): how much do the rows move between seeds of the same 64 prompts?

    OMP_NUM_THREADS=1 PYTHONPATH=. python nodes/mixdq/results/seed_rerun.py SEED OUT.json

(Run on 2026-11-30 as /tmp/seed2.py, same code with print; the JSONs' "command" field names that file.)
"""
import json
import sys

import torch
from nodes.mixdq import bench_quality as bq

SEED = int(sys.argv[1])
_init = bq._Setup.__init__


def _patched(self, n, *a, **k):  # the bench's _Setup, initial noise [n, 4, 16, 16] seeded SEED instead of 1234
    _init(self, n, *a, **k)
    self.noise = torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(SEED)).to(self.device)


bq._Setup.__init__ = _patched
out = bq.run_quality(n=64, steps=4, n_calib=16, device="cpu", log=lambda s: sys.stdout.write(s + "\n"),
                     reuse="nodes/mixdq/results/quality_student_cpu_run3.json")
out["noise_seed"] = SEED
out["table"] = bq.quality_table(out["rows"])
sys.stdout.write(out["table"] + "\n")
json.dump(out, open(sys.argv[2], "w"), indent=1)
