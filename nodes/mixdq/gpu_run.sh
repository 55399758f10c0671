#!/usr/bin/env bash
# The one device call of issue 7 (MixDQ): GPU tests, then the cost bench on SD1.5- and SDXL-size UNets.
# Run from the repo root with the lead's wheels carried (.whl: diffusers is not on the device):
#     OUT=/some/dir bash nodes/mixdq/gpu_run.sh
# Writes under $OUT: env.txt, gpu_tests.log, cost_sd15.{json,log}, cost_sdxl.{json,log}.
set -u
OUT=${OUT:-/tmp/mixdq_out}
mkdir -p "$OUT"
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:${PYTHONPATH:-} HF_HUB_OFFLINE=1
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
  python3 -c "import torch, triton, diffusers; print(torch.__version__, triton.__version__, diffusers.__version__)"; } > "$OUT/env.txt" 2>&1
tests="tests/kernels/test_lowbit_kernels.py tests/mixdq/test_plans.py"
timeout 55 python3 -m pytest -q -m gpu -n 8 -p no:cacheprovider $tests > "$OUT/gpu_tests.log" 2>&1
rc=$?
if [ $rc -eq 4 ]; then   # no pytest-xdist here: run serially
  timeout 55 python3 -m pytest -q -m gpu -p no:cacheprovider $tests > "$OUT/gpu_tests.log" 2>&1
fi
echo "tests done at +$(( $(date +%s) - t0 )) s" | tee -a "$OUT/gpu_tests.log"
timeout 60 python3 -m nodes.mixdq.bench cost --archs sd15 --batches 1,8 --iters 10 --workers 14 \
  --out "$OUT/cost_sd15.json" > "$OUT/cost_sd15.log" 2>&1
echo "sd15 done at +$(( $(date +%s) - t0 )) s" | tee -a "$OUT/cost_sd15.log"
left=$(( 188 - ($(date +%s) - t0) ))
timeout $left python3 -m nodes.mixdq.bench cost --archs sdxl --batches 1,8 --iters 10 --workers 14 \
  --variants "fp16,fp16 fast,W8A8,W4A8" --out "$OUT/cost_sdxl.json" > "$OUT/cost_sdxl.log" 2>&1
echo "sdxl done at +$(( $(date +%s) - t0 )) s" | tee -a "$OUT/cost_sdxl.log"
