"""The offline (concept customization) demo's concept: one held-out scene and a few procedural renders of it.

PSO's DreamBooth-style setting (methods.md §5, offline): 3-5 instance images of one concept plus its prompt. Here the
concept is a held-out two-object caption (never seen in the teacher's training), chosen among held-out scenes 300+
so that it is not one of the table's 300 evaluation prompts; its targets are renders of that scene with the objects
jittered inside their cells (``nodes.zoo.data.JITTER``), as a photographer's few shots of one subject.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import torch

from fewstep.nodes.zoo import data

CONCEPT_INDEX = 300     # first held-out scene index outside the table's 300 evaluation prompts


def concept_scene(kind: str = "relation") -> data.Scene:
    """The first held-out scene of ``kind`` at index >= :data:`CONCEPT_INDEX` (deterministic)."""
    scenes = data.make_split("heldout", CONCEPT_INDEX + 50, seed=0)[CONCEPT_INDEX:]
    for scene in scenes:
        if scene.kind == kind:
            return scene
    raise ValueError(f"no held-out scene of kind {kind!r} among indices {CONCEPT_INDEX}..{CONCEPT_INDEX + 49}")


def concept_images(scene: data.Scene, n: int = 5, seed: int = 0) -> torch.Tensor:
    """IMAGE [n, 64, 64, 3] in 0..1: ``scene`` rendered ``n`` times with fresh jitter of every object."""
    rng = random.Random(seed)
    shots = []
    for _ in range(n):
        objs = tuple(replace(o, dx=rng.uniform(-data.JITTER, data.JITTER), dy=rng.uniform(-data.JITTER, data.JITTER))
                     for o in scene.objects)
        shots.append(np.asarray(data.render(replace(scene, objects=objs)), dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(shots))
