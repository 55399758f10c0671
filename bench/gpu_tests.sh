#!/usr/bin/env bash
# The `gpu`-marked tests on a CUDA machine without internet (the device machine), from the repo root:
#     OUT=/some/dir bash bench/gpu_tests.sh
# Wheels the machine lacks (diffusers, the aiohttp stack, pytest-asyncio/-aiohttp, setuptools) travel in
# .whl/ (see docs/packaging.md, "GPU tests"). fewstep is installed editable so that its entry points (the
# built-in packs) and fewstep.bench resolve as in a developer's checkout.
# Writes under $OUT: env.txt, gpu_tests.log.
set -u
OUT=${OUT:-/tmp/gpu_tests}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:${PYTHONPATH:-} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 \
    || echo "editable install failed (see install.log)" | tee -a "$OUT/env.txt"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
  python3 -c "import torch, triton, diffusers; print(torch.__version__, triton.__version__, diffusers.__version__)"; } \
  >> "$OUT/env.txt" 2>&1
timeout "${TESTS_S:-420}" python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -m gpu tests 2>&1 \
  | tee "$OUT/gpu_tests.log" | tail -n 30
