#!/usr/bin/env bash
# PRD on one GPU: the same recipes as the shipped CPU weights, with longer budgets. NOT RUN YET.
#   OUT=<dir> bash bench/prd/gpu_run.sh          (teacher <= 10 min, generator <= 20 min on one H100)
# Writes into $OUT: prd-mv-teacher.*, prd-caption-probe.*, prd-teacher-report.json, prd-teacher-samples.png,
# prd-triplane-generator.*, prd-generator-report.json. Copy them into fewstep/nodes/prd/weights/ and update
# the model cards (the 16-px image size is fixed by ViewSpec; a 32-px teacher is one field away).
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" -m fewstep.nodes.prd.recipe teacher --device cuda --threads 8 --seconds 600 --out "$OUT" | tee "$OUT/teacher_log.txt"
# the generator stage reads the teacher from --out; 3000 PRD iterations (K = 4) also set the t_min ramp
"$PY" -m fewstep.nodes.prd.recipe generator --device cuda --threads 8 --seconds 1200 --steps 3000 --out "$OUT" \
  | tee "$OUT/generator_log.txt"
