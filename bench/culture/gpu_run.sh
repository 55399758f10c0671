#!/usr/bin/env bash
# The full-size cultural-accumulation runs of issue 22 on one GPU, from the repo root (no install needed):
#     OUT=/some/dir bash bench/culture/gpu_run.sh            # TINY=1: a seconds-long smoke run (CPU is fine)
# Eight trainings run as parallel processes (each launch-bound Python, one CPU core, the GPU shared), each
# time-budgeted by the preset (240-250 s of PPO after a 3-update probe; `timeout TRAIN_S` guards it); then one
# evaluation writes table.json, table.md and the plots. Everything lands under $OUT:
#     env.txt, train_<job>.log, policy_<job>.safetensors, train_<job>.json, in_weights.json, eval.log,
#     table.json, table.md, in_context.png, sweep.png, tsp.png, tsp_trials.png, in_weights.png
# Judge the saved policies again anywhere: python bench/culture/table.py --preset full --out $OUT --jobs
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
for job in $(python3 bench/culture/table.py --preset $PRESET --list-jobs); do
  timeout "${TRAIN_S:-320}" python3 bench/culture/table.py --preset $PRESET --out "$OUT" --device "$DEV" \
      --jobs "$job" --no-eval > "$OUT/train_$job.log" 2>&1 &
done
wait
echo "trainings done at +$(( $(date +%s) - t0 )) s" | tee -a "$OUT/env.txt"
timeout "${EVAL_S:-80}" python3 bench/culture/table.py --preset $PRESET --out "$OUT" --device "$DEV" --jobs \
    > "$OUT/eval.log" 2>&1
rc=$?
echo "evaluation done at +$(( $(date +%s) - t0 )) s (rc $rc)" | tee -a "$OUT/env.txt"
