#!/usr/bin/env bash
# Train + evaluate the built-in AR models (VQ -> AR -> MAR) on one GPU, from the repo root:
#     OUT=/some/dir bash bench/zoo/ar_gpu_run.sh
# Needs .gpu_cache/ar/ar_captions.{safetensors,json} (MiniLM sentence embeddings of the caption sets; write
# them with `python -m fewstep.nodes.zoo.ar.captions .gpu_cache/ar` where MiniLM is installed).
# Writes under $OUT: fewstep-tiny-{vq,ar,mar}.{safetensors,json} (the loader's format), ar_eval.json,
# ar_samples.safetensors, ar_gpu_run.log. About 6 minutes on an H100 (training stops on wall time).
# TINY=1 runs the smoke preset (seconds, CPU is fine).
set -euo pipefail
OUT=${OUT:-/tmp/ar_gpu_run}
PRESET=gpu
if [ "${TINY:-0}" = "1" ]; then PRESET=tiny; fi
mkdir -p "$OUT"
export PYTHONPATH=.:${PYTHONPATH:-} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 bench/zoo/ar_gpu_run.py --out "$OUT" --cache .gpu_cache/ar --preset "$PRESET" ${N_EVAL:+--n-eval $N_EVAL} ${AR_SECONDS:+--seconds $AR_SECONDS}
