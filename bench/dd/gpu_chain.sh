#!/usr/bin/env bash
# The AR teacher, then Distilled Decoding and the DiSA rows, in one GPU call (<= 9 min on one H100):
#     OUT=/some/dir bash bench/dd/gpu_chain.sh          # TINY=1: CPU smoke test
# $OUT/ar: bench/zoo/ar_gpu_run.sh (AR_SECONDS per model, default 105 s); then, side by side on the same GPU,
# $OUT/dd: bench/dd/gpu_run.py (DD_TRAIN_S of training, default 100 s) and $OUT/dd/disa: the DiSA token rows.
set -euo pipefail
: "${OUT:?set OUT}"
PY=${PYTHON:-python3}
CAPTIONS=${DD_CAPTIONS:-.gpu_cache/ar}
export PYTHONPATH=.:${PYTHONPATH:-} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT/ar" "$OUT/dd"
OUT="$OUT/ar" AR_SECONDS=${AR_SECONDS:-105} bash bench/zoo/ar_gpu_run.sh > "$OUT/ar.log" 2>&1
TINY_FLAG=(); [ "${TINY:-0}" = "1" ] && TINY_FLAG=(--tiny)
"$PY" -m fewstep.bench.dd.gpu_run --teacher "$OUT/ar" --captions "$CAPTIONS" --out "$OUT/dd" --scratch /tmp/dd_chain_scratch \
    --train-seconds "${DD_TRAIN_S:-100}" "${TINY_FLAG[@]}" > "$OUT/dd.log" 2>&1 &
dd_pid=$!
N_DISA=512; [ "${TINY:-0}" = "1" ] && N_DISA=8
timeout "${DISA_S:-150}" "$PY" -m fewstep.bench.disa.table --mar-dir "$OUT/ar" --captions "$CAPTIONS" --n $N_DISA \
    --tokens-only --out "$OUT/dd/disa" > "$OUT/disa.log" 2>&1 || echo "DiSA rows did not finish (see disa.log)"
wait $dd_pid
echo "chain done"
