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
SECONDS_EACH="${SECONDS_EACH:-240}"; BATCH=128; CLIPS=78
if [ "${TINY:-0}" = 1 ]; then SECONDS_EACH=10; BATCH=2; CLIPS=4; fi
CACHE=.gpu_cache/video/text_tokens.safetensors
for K in 4 2; do
  python3 -m fewstep.bench.tdm.video_students --steps-k "$K" --seconds "$SECONDS_EACH" --batch-size "$BATCH" \
    --out "$OUT" --report "$OUT/students.json" --text-cache "$CACHE" 2>&1 | tee -a "$OUT/log.txt"
done
python3 -m fewstep.bench.tdm.video_table --students "$OUT" --clips "$CLIPS" --text-cache "$CACHE" \
  --out "$OUT/table.json" 2>&1 | tee -a "$OUT/log.txt"
