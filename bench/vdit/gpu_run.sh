#!/usr/bin/env bash
# Efficient-vDiT's full pipeline on one GPU, from the repo root (not run yet):
#     OUT=<dir> bash bench/vdit/gpu_run.sh        # TEACHER_DIR=<dir>: a GPU-trained fewstep-tiny-video (default: the shipped one)
# 1. students: MLCD (6,000 steps, batch 32, 50 teacher steps in 10 segments, data-free teacher states, EMA target),
#    then for r = 0.025, 0.05, 0.1 the per-layer mask search and KD (3,000 steps each)
#    (python -m fewstep.bench.vdit.train_students --preset gpu);
# 2. the end-to-end table on 156 held-out clips (fewstep bench vdit --weights $OUT);
# 3. the attention kernel at the paper's 720p shapes (fewstep bench vdit-kernel: fused flex attention vs SDPA).
# Reads MiniLM token states from .gpu_cache/video/text_tokens.safetensors when it exists (written by
# `python -m fewstep.nodes.zoo.video.train --out x --write-text-cache .gpu_cache/video/text_tokens.safetensors`).
# Writes under $OUT: fewstep-vdit-*.safetensors/.json, train_report.json, vdit.json/.md, vdit_kernel.json/.md,
# log.txt, env.txt. Copy the students into fewstep/nodes/vdit/weights/ and update the model card from the reports.
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-python}                      # with fewstep installed (pip install --no-deps -e .)
{ date -u; nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo "no GPU";
  "$PY" -c "import torch; print('torch', torch.__version__)"; } > "$OUT/env.txt" 2>&1
EXTRA=()
[ -f .gpu_cache/video/text_tokens.safetensors ] && EXTRA+=(--text-cache .gpu_cache/video/text_tokens.safetensors)
[ -n "${TEACHER_DIR:-}" ] && EXTRA+=(--teacher-root "$TEACHER_DIR")
# every stage rewrites its weights and train_report.json, so a run stopped by the timeout keeps what it finished
timeout "${LIMIT_S:-3000}" "$PY" -m fewstep.bench.vdit.train_students --preset gpu --out "$OUT" "${EXTRA[@]}" \
  2>&1 | tee "$OUT/log.txt"
"$PY" -m fewstep.bench.vdit.table --weights "$OUT" --clips 156 --out "$OUT/vdit.json" "${EXTRA[@]}" 2>&1 | tee -a "$OUT/log.txt"
"$PY" -m fewstep.bench.vdit.kernel --out "$OUT" 2>&1 | tee -a "$OUT/log.txt"
