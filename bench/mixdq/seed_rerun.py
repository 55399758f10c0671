"""Re-evaluate every row of quality_student_cpu_run3.json with another initial-noise seed (probe scores reused,
so the same allocations): how much do the rows move between seeds of the same 64 prompts?

    OMP_NUM_THREADS=1 python -m fewstep.bench.mixdq.seed_rerun SEED OUT.json

(Run on 2026-11-30 as /tmp/seed2.py, then kept as nodes/mixdq/results/seed_rerun.py, same code with print; the
JSONs' "command" field names that file. Now beside the bench it patches, bench/mixdq/quality.py.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from fewstep.bench.mixdq import quality as bq

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str]) -> int:
    seed, out_path = int(argv[0]), Path(argv[1])
    init = bq._Setup.__init__

    def patched(self, n, *a, **k):  # the bench's _Setup, initial noise [n, 4, 16, 16] seeded SEED instead of 1234
        init(self, n, *a, **k)
        self.noise = torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(seed)).to(self.device)

    bq._Setup.__init__ = patched
    try:
        out = bq.run_quality(n=64, steps=4, n_calib=16, device="cpu", log=lambda s: sys.stdout.write(s + "\n"),
                             reuse=str(RESULTS / "quality_student_cpu_run3.json"))
    finally:
        bq._Setup.__init__ = init
    out["noise_seed"] = seed
    out["table"] = bq.quality_table(out["rows"])
    sys.stdout.write(out["table"] + "\n")
    out_path.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
