"""Experiments of the MLCM pack: the distillation table (``fewstep bench distill``), the GPU job, the students'
training driver, model-card writer and LoRA rank truncation; ``results/`` holds their recorded outputs."""
