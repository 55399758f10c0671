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
source "$(dirname "${BASH_SOURCE[0]}")/../gpu_common.sh"   # $OUT, diffusers from .whl_gpu/, PYTHONPATH, env.txt
PRESET=gpu
[ "${TINY:-0}" = 1 ] && PRESET=smoke
# every stage rewrites the weights and report.json, so a run stopped by the timeout keeps what it finished
timeout "${LIMIT_S:-430}" python3 -m fewstep.nodes.zoo.video.train --out "$OUT" --preset "$PRESET" \
  --text-cache .gpu_cache/video/text_tokens.safetensors --workers "${WORKERS:-8}" 2>&1 | tee "$OUT/log.txt"
