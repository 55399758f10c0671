"""AccVideo's key timesteps are the shift-7 50-step grid at indices 0, 10, ..., 50."""

from __future__ import annotations

import torch

from fewstep.nodes.accvideo.keypoints import KEY_INDICES, key_timesteps, t_of_key


def test_key_points_equal_the_shift7_schedule() -> None:
    keys = key_timesteps()
    sigma = 1 - torch.tensor(KEY_INDICES, dtype=torch.float64) / 50
    expected = 7 * sigma / (1 + 6 * sigma)                       # σ' = 7σ / (1 + 6σ)
    assert keys.shape == (6,)
    assert torch.allclose(keys.double(), expected, atol=1e-7)
    # the paper's quoted values (1 > .9651 > .9130 > .8235 > .6363 > 0); 0.9651 is 4e-4 below 7*0.8/5.8
    paper = torch.tensor([1.0, 0.9651, 0.9130, 0.8235, 0.6363, 0.0])
    assert torch.allclose(keys, paper, atol=5e-4)
    assert t_of_key(5, keys) == 1.0 and t_of_key(0, keys) == 0.0 and t_of_key(4, keys) == float(keys[1])
