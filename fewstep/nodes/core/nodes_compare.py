"""Comparison nodes: sweep several MODELs (each with its sampler and schedule) over prompts and draw the
results as one labelled image grid beside a METRICS table. The library is ``fewstep.nodes.core.compare``."""

from __future__ import annotations

from fewstep.app.api import Node

NODES: tuple[type[Node], ...] = ()
