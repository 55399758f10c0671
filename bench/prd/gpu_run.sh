#!/usr/bin/env bash
# PRD on one GPU: the same recipes as the shipped CPU weights, with longer budgets. NOT RUN YET.
#   OUT=<dir> bash bench/prd/gpu_run.sh          (teacher <= 10 min, generator <= 20 min on one H100)
# Writes into $OUT: fewstep-tiny-mv-teacher.* (with -report.json, -samples.png) and fewstep-tiny-mv-probe.*
# (copy them into fewstep/nodes/zoo/weights/), prd-triplane-generator.* and prd-generator-report.json (into
# fewstep/nodes/prd/weights/); then update the model cards (the 16-px image size is fixed by ViewSpec in
# fewstep/nodes/zoo/multiview/data.py; a 32-px teacher is one field away).
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" -m fewstep.nodes.zoo.multiview.train --device cuda --threads 8 --seconds 600 --out "$OUT" \
  | tee "$OUT/teacher_log.txt"
# the generator distils the teacher just trained; 3000 PRD iterations (K = 4) also set the t_min ramp
"$PY" -m fewstep.nodes.prd.recipe --device cuda --threads 8 --seconds 1200 --steps 3000 --teacher "$OUT" --out "$OUT" \
  | tee "$OUT/generator_log.txt"
