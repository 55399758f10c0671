"""Loading the shipped TDM and PSO students prints no diffusers "should be kept in float32: []" warning:
the UNets are built in float32 and only moved, not cast to the dtype they already have."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch

from fewstep.nodes.core.train.devices import place

WARNING = "should be kept in float32"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if WARNING in record.getMessage():
            self.messages.append(record.getMessage())


@pytest.fixture
def dtype_warnings() -> Iterator[list[str]]:
    """Messages of the warning; diffusers' logger does not propagate to the root, so caplog misses it."""
    handler = _Collect()
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def test_place_moves_without_casting_a_float32_unet(dtype_warnings: list[str]) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
                                norm_num_groups=4, attention_head_dim=2)
    assert place(unet, "cpu", torch.float32) is unet
    assert not dtype_warnings
    unet.to(device="cpu", dtype=torch.float32)   # what the loaders did: the warning, for nothing
    assert dtype_warnings
    assert next(place(unet, "cpu", torch.float64).parameters()).dtype == torch.float64   # casts when needed


@pytest.mark.parametrize("graph_loader", ["tdm", "pso"])
def test_loading_shipped_students_prints_no_dtype_warning(graph_loader: str, dtype_warnings: list[str]) -> None:
    from fewstep.nodes.core.train.builtin import pack_weights_dir

    if graph_loader == "tdm":
        from fewstep.nodes.tdm.steps import fold_steps
        from fewstep.nodes.tdm.students import load_student

        fold_steps(load_student(next(pack_weights_dir("tdm").glob("*.safetensors"))), 4)
    else:
        from fewstep.nodes.pso.students import load_pso_unet

        load_pso_unet(next(pack_weights_dir("pso").glob("*.safetensors")), "cpu", torch.float32)
    assert not dtype_warnings
