"""Issue #24 item 7 (part): an interrupt reaches a tiled decode between tiles, not after the whole image."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fewstep.app.api import ExecutionContext, InterruptedError_, reset_context, set_context
from fewstep.nodes.core.vae_fast import tiled_decode


def test_tiled_decode_stops_between_tiles_when_interrupted() -> None:
    decoded: list[Any] = []
    stop = [False]

    def decode(tile: torch.Tensor) -> torch.Tensor:
        decoded.append(tile.shape)
        stop[0] = len(decoded) >= 2          # the user presses Interrupt during the second tile
        return tile[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2)

    context = ExecutionContext("p", "1", "VAEDecode", {}, {}, lambda *a: None, lambda: stop[0])
    token = set_context(context)
    try:
        with pytest.raises(InterruptedError_):
            tiled_decode(decode, torch.zeros(1, 4, 64, 64), tile=24, overlap=4)
    finally:
        reset_context(token)
    assert len(decoded) == 2                 # of 9 tiles
    assert tiled_decode(decode, torch.zeros(1, 4, 64, 64), tile=24, overlap=4).shape == (1, 3, 512, 512)
