#!/usr/bin/env bash
# The full-size cultural-accumulation runs on one GPU, from the repo root (no install needed):
#     OUT=/some/dir bash bench/culture/gpu_run.sh            # TINY=1: a seconds-long smoke run (CPU is fine)
#     CORES="s5" OUT=... bash bench/culture/gpu_run.sh      # one core only (default: "gru s5", one after the other)
# Per core, eleven trainings (eight Memory Sequence / TSP / in-weights, three Goal Sequence) run as parallel
# processes (each launch-bound Python, one CPU core, the GPU shared), each time-budgeted by the preset (240-250 s
# of PPO after a 3-update probe; `timeout TRAIN_S` guards it); then one evaluation writes table.json, table.md
# and the plots. Then the paper comparison of both cores. Everything lands under $OUT (PRESET = full, or tiny with TINY=1):
#     env.txt
#     $PRESET/     GRU agents: train_<job>.log, policy_<job>.safetensors, train_<job>.json, in_weights.json,
#                  eval.log, table.json, table.md, in_context.png, sweep.png, tsp.png, tsp_trials.png, in_weights.png,
#                  goal_sequence.png
#     ${PRESET}_s5/  the same with S5 agents (4 S5 blocks of width 256, state 256)
#     ${PRESET}_paper/paper.md, paper.png   the paper's claims beside both tables
# About 7 minutes per core. Judge saved policies again anywhere:
#     python bench/culture/table.py --preset full --out $OUT/full [--core s5 --out $OUT/full_s5] --jobs
set -u
OUT=${OUT:-/tmp/culture_out}
mkdir -p "$OUT"
PRESET=full
[ "${TINY:-0}" = 1 ] && PRESET=tiny
export PYTHONPATH=$PWD:${PYTHONPATH:-} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
t0=$(date +%s)
DEV=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null;
  python3 -c "import torch; print('torch', torch.__version__)"; echo "device $DEV preset $PRESET"; } > "$OUT/env.txt" 2>&1
for core in ${CORES:-gru s5}; do
  dir="$OUT/$PRESET"
  [ "$core" = s5 ] && dir="$OUT/${PRESET}_s5"
  mkdir -p "$dir"
  for job in $(python3 bench/culture/table.py --preset $PRESET --list-jobs); do
    timeout "${TRAIN_S:-320}" python3 bench/culture/table.py --preset $PRESET --core "$core" --out "$dir" \
        --device "$DEV" --jobs "$job" --no-eval > "$dir/train_$job.log" 2>&1 &
  done
  wait
  echo "$core trainings done at +$(( $(date +%s) - t0 )) s" | tee -a "$OUT/env.txt"
  timeout "${EVAL_S:-150}" python3 bench/culture/table.py --preset $PRESET --core "$core" --out "$dir" --device "$DEV" \
      --jobs > "$dir/eval.log" 2>&1
  rc=$?
  echo "$core evaluation done at +$(( $(date +%s) - t0 )) s (rc $rc)" | tee -a "$OUT/env.txt"
done
python3 bench/culture/table.py --preset $PRESET --paper --results "$OUT" > "$OUT/paper.log" 2>&1
rc=$?
echo "paper comparison rc $rc -> $OUT/${PRESET}_paper" | tee -a "$OUT/env.txt"
