"""Experiments of the PSO pack: the GPU job, the table and the model-card writer; ``results/`` holds their
recorded outputs."""
