"""Experiments of the TDM pack: the table (``fewstep bench tdm``), the GPU job, the students' training driver and
the model-card writer; ``results/`` holds their recorded outputs."""
