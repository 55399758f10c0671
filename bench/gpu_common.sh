# Shared head of the video GPU drivers (bench/zoo/video_gpu_run.sh, bench/tdm/video_gpu_run.sh). Source it from
# the repo root after `set -euo pipefail`:
#     source "$(dirname "${BASH_SOURCE[0]}")/../gpu_common.sh"
# It checks $OUT and creates it; installs diffusers from .whl_gpu/ into /tmp/video_site when the machine lacks it;
# puts the checkout (and that folder) on PYTHONPATH with the Hugging Face hubs offline; and writes $OUT/env.txt
# (date, GPU name, torch and diffusers versions).
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
