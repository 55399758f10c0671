#!/usr/bin/env bash
# Several GPU drivers at once on one device machine (they share the GPU and its CPU cores), from the repo root:
#     OUT=/some/dir bash bench/gpu_batch.sh NAME='command' [NAME='command' ...]
# Each command runs in the background with OUT=$OUT/NAME, its output in $OUT/NAME/driver.log, and is killed
# after $LIMIT_S seconds (default 480). Wheels the machine lacks travel in .whl_gpu/ (diffusers, setuptools
# for the editable install). Writes $OUT/batch.json: each driver's exit code and wall time.
set -u
OUT=${OUT:?set OUT}
LIMIT_S=${LIMIT_S:-480}
mkdir -p "$OUT"
if compgen -G ".whl_gpu/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_gpu/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 \
  || echo "editable install failed (see install.log)"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader;
  python3 -c "import torch; print('torch', torch.__version__)"; } > "$OUT/env.txt" 2>&1
declare -A PIDS STARTS
for spec in "$@"; do
  name=${spec%%=*}; cmd=${spec#*=}
  mkdir -p "$OUT/$name"
  STARTS[$name]=$(date +%s)
  ( export OUT="$OUT/$name"; timeout "$LIMIT_S" bash -c "$cmd" > "$OUT/driver.log" 2>&1 ) &
  PIDS[$name]=$!
done
echo "{" > "$OUT/batch.json"
first=1
for name in "${!PIDS[@]}"; do
  wait "${PIDS[$name]}"; rc=$?
  [ $first -eq 1 ] || echo "," >> "$OUT/batch.json"; first=0
  printf '"%s": {"rc": %d, "wall_s": %d}' "$name" "$rc" "$(( $(date +%s) - STARTS[$name] ))" >> "$OUT/batch.json"
  echo "$name rc=$rc"; tail -n 5 "$OUT/$name/driver.log"
done
echo "}" >> "$OUT/batch.json"
