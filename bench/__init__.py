"""Experiments, apart from the runtime packs: the papers' tables, GPU-run drivers, model-card writers,
student-training drivers and benchmarks, with their result JSON. Installed as ``fewstep.bench``; the
``fewstep bench ...`` and ``fewstep eval ...`` commands dispatch here."""
