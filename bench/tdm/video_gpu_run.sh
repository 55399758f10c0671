#!/usr/bin/env bash
# TDM students of the built-in video model on one GPU (not run yet), from the repo root:
#     OUT=<dir> bash bench/tdm/video_gpu_run.sh          # TINY=1: a smoke-sized run (CPU is fine)
# Trains a K = 4 and a K = 2 student (python -m fewstep.bench.tdm.video_students, full copies of the DiT,
# batch 128, fake lr 5e-4, student lr 1e-4, CFG 4; SECONDS each, default 240), then judges them beside the
# teacher at 50 / 4 / 2 Euler steps on the held-out captions (python -m fewstep.bench.tdm.video_table, 78 clips).
# Reads the MiniLM token states from .gpu_cache/video/text_tokens.safetensors (written on a machine with the
# MiniLM package by `python -m fewstep.nodes.zoo.video.train --out x --write-text-cache
# .gpu_cache/video/text_tokens.safetensors`); needs diffusers (installed from .whl_gpu/ when missing).
# Writes under $OUT: fewstep-tdm-video-k4.safetensors, fewstep-tdm-video-k2.safetensors, students.json,
# table.json/.md, log.txt, env.txt. Ship with: cp $OUT/fewstep-tdm-video-k*.safetensors fewstep/nodes/tdm/weights/
# and python -m fewstep.bench.tdm.video_cards $OUT/students.json $OUT/table.json fewstep/nodes/tdm/weights
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../gpu_common.sh"   # $OUT, diffusers from .whl_gpu/, PYTHONPATH, env.txt
SECONDS_EACH="${SECONDS_EACH:-240}"; BATCH=128; CLIPS=78
if [ "${TINY:-0}" = 1 ]; then SECONDS_EACH=10; BATCH=2; CLIPS=4; fi
CACHE=.gpu_cache/video/text_tokens.safetensors
for K in 4 2; do
  python3 -m fewstep.bench.tdm.video_students --steps-k "$K" --seconds "$SECONDS_EACH" --batch-size "$BATCH" \
    --out "$OUT" --report "$OUT/students.json" --text-cache "$CACHE" 2>&1 | tee -a "$OUT/log.txt"
done
python3 -m fewstep.bench.tdm.video_table --students "$OUT" --clips "$CLIPS" --text-cache "$CACHE" \
  --out "$OUT/table.json" 2>&1 | tee -a "$OUT/log.txt"
