"""MixDQ's cost and quality tables (``fewstep bench mixdq``) and the GPU-run script; ``results/`` holds the
recorded runs (logs, JSON, the seed re-run script)."""
