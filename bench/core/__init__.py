"""Experiments on the core pack and the server: ``fewstep bench sampling`` (the fast path against diffusers'
pipelines), ``fewstep bench server`` (what the server adds to a job) and ``fewstep eval`` (a sampler grid)."""
