#!/usr/bin/env bash
# The one device call of issue 7 (MixDQ): GPU tests, then the cost bench on SD1.5- and SDXL-size UNets.
# Run from the repo root with the lead's wheels carried (.whl: diffusers is not on the device):
#     OUT=/some/dir bash bench/mixdq/gpu_run.sh
# Writes under $OUT: env.txt, gpu_tests.log, cost.json, cost.log. CALL_S: the call's seconds (default 190).
set -u
OUT=${OUT:-/tmp/mixdq_out}
mkdir -p "$OUT"
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:${PYTHONPATH:-} HF_HUB_OFFLINE=1
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
  python3 -c "import torch, triton, diffusers; print(torch.__version__, triton.__version__, diffusers.__version__)"; } > "$OUT/env.txt" 2>&1
tests="tests/kernels/test_lowbit_kernels.py tests/mixdq/test_plans.py"
timeout 50 python3 -m pytest -q -m gpu -n 8 -p no:cacheprovider $tests > "$OUT/gpu_tests.log" 2>&1
rc=$?
if [ $rc -eq 4 ]; then   # no pytest-xdist here: run serially
  timeout 55 python3 -m pytest -q -m gpu -p no:cacheprovider $tests > "$OUT/gpu_tests.log" 2>&1
fi
echo "tests done at +$(( $(date +%s) - t0 )) s" | tee -a "$OUT/gpu_tests.log"
# One bench process for both architectures (one import, one precompile pool; SDXL reuses the cached
# kernels). The JSON is rewritten after every row; rows that would start past --budget-s are skipped
# and listed, so a cut-short call still returns what it measured. First H200 call (2026-11-30): pip +
# tests 64 s, SD1.5 build 19 s + precompile 32 s (105 kernels, 14 processes), SDXL build 14 s +
# precompile 8 s (cache hits), SDXL rows ~4-10 s each.
left=$(( ${CALL_S:-190} - ($(date +%s) - t0) ))
timeout $left python3 -m fewstep.bench.mixdq.bench cost --archs ${ARCHS:-sd15,sdxl} --batches 1,8 --iters 10 --workers 14 \
  --budget-s $(( left - 20 )) --out "$OUT/cost.json" > "$OUT/cost.log" 2>&1
echo "bench done at +$(( $(date +%s) - t0 )) s" | tee -a "$OUT/cost.log"
