"""Held-out metrics on real renders: the probe on object-centred frames and the tracker read them perfectly."""

import random

import numpy as np
import torch

from fewstep.nodes.zoo.builtin import load_probe
from fewstep.nodes.zoo.video import clips, tracker
from fewstep.nodes.zoo.video import evaluate as ev


def test_centre_on_object_moves_the_centroid_to_the_middle():
    spec = clips.sample_start("diamond", "purple", "large", "moving down", 8, random.Random(2))
    centred = ev.centre_on_object(clips.render_clip(spec), "purple")
    np.testing.assert_allclose(tracker.track(centred, "purple"), np.full((8, 2), 32.0), atol=0.51)  # rounding to pixels


def test_real_renders_score_perfectly_and_noise_does_not():
    specs = ev.heldout_specs(12, 8, seed=4)
    real = ev.render_specs(specs)
    probe = load_probe()
    assert ev.frame_attribute_accuracy(probe, real, specs)["frame_attribute_accuracy"] == 1.0
    assert ev.motion_accuracy(real, specs) == 1.0
    still = torch.from_numpy(np.stack([clips.render_clip(clips.sample_start(s.shape, s.colour, s.size, "standing still", 8,
                                                                            random.Random(0))) for s in specs]))
    moving = [s for s in specs if s.motion != "standing still"]
    assert ev.motion_accuracy(still[[specs.index(s) for s in moving]], moving) == 0.0
