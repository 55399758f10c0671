"""Experiments of the R0 pack: the ablation table, the GPU job, the arms' training driver, the reward-scale
calibration and the model-card writer; ``results/`` holds their recorded outputs."""
