#!/usr/bin/env bash
# The built-in video model on one GPU (about 6 minutes on an H100 shared with other drivers), from the repo root:
#     OUT=<dir> bash bench/zoo/video_gpu_run.sh          # TINY=1: a smoke-sized run (CPU is fine)
# Trains the 3D-conv feature net (~40 s) and the video DiT (250 s), then evaluates on held-out captions at
# 50 / 10 / 5 Euler steps (python -m fewstep.nodes.zoo.video.train --preset gpu). Reads the MiniLM token
# states from .gpu_cache/video/text_tokens.safetensors (written here by
# `python -m fewstep.nodes.zoo.video.train --out x --write-text-cache .gpu_cache/video/text_tokens.safetensors`);
# needs diffusers (installed from .whl_gpu/ when missing). Writes under $OUT:
#   fewstep-tiny-video.safetensors/.json, fewstep-tiny-video-features.safetensors/.json, report.json,
#   log.txt, env.txt
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
if ! python3 -c "import diffusers" 2>/dev/null && compgen -G ".whl_gpu/diffusers-*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/video_site .whl_gpu/diffusers-*.whl
  export PYTHONPATH="/tmp/video_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
{ date -u; nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo "no GPU";
  python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"; } \
  > "$OUT/env.txt" 2>&1
PRESET=gpu
[ "${TINY:-0}" = 1 ] && PRESET=smoke
# every stage rewrites the weights and report.json, so a run stopped by the timeout keeps what it finished
timeout "${LIMIT_S:-430}" python3 -m fewstep.nodes.zoo.video.train --out "$OUT" --preset "$PRESET" \
  --text-cache .gpu_cache/video/text_tokens.safetensors --workers "${WORKERS:-8}" 2>&1 | tee "$OUT/log.txt"
