"""A whole MixDQ graph through the engine's executor on CPU: calibrate -> allocate -> quantize -> save -> load.

A stub pack supplies MODEL / GUIDER / SAMPLER / SIGMAS / LATENT around a tiny random UNet (what the core
loaders will provide for real models).
"""

from __future__ import annotations

import json

import torch
from helpers import text_states, tiny_unet
from torch import nn

from fewstep.app.api import Link, Node, NodeOutput, Output, Paths, Schema, use_paths
from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.registry import Registry
from fewstep.nodes.core.denoiser import Denoiser, FlowSchedule
from fewstep.nodes.core.guidance import BasicGuider
from fewstep.nodes.core.samplers import get_sampler
from fewstep.nodes.mixdq import entrypoint
from fewstep.nodes.mixdq.layers import QuantConv2d, QuantLinear


class UNetFn(nn.Module):
    """model_fn(x, t, cond) -> raw output, around a diffusers UNet (cond = text states)."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x, t, cond):
        return self.unet(x, t, encoder_hidden_states=cond).sample


class StubSetup(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="StubSetup", outputs=[Output("model", "MODEL"), Output("guider", "GUIDER"),
                                                    Output("sampler", "SAMPLER"), Output("sigmas", "SIGMAS"),
                                                    Output("latent", "LATENT")])

    @classmethod
    def execute(cls) -> NodeOutput:
        model = Denoiser(UNetFn(tiny_unet()), "flow", FlowSchedule())
        guider = BasicGuider(model, text_states(2))
        return NodeOutput(model, guider, get_sampler("euler"), torch.tensor([1.0, 0.0]),   # one step: fast
                          {"samples": torch.zeros(2, 4, 8, 8)})


class StubSink(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="StubSink", inputs=[Link("model", "MODEL"), Link("memory", "METRICS")],
                      is_output_node=True)

    @classmethod
    def execute(cls, model, memory) -> NodeOutput:
        kinds = sorted({type(m).__name__ for m in model.model_fn.modules() if isinstance(m, (QuantLinear, QuantConv2d))})
        return NodeOutput(ui={"kinds": kinds, "compression": [memory["compression"]]})


class StubSample(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="StubSample", inputs=[Link("model", "MODEL")], is_output_node=True)

    @classmethod
    def execute(cls, model) -> NodeOutput:
        x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
        out = get_sampler("euler")(BasicGuider(model, text_states(2)), x, torch.tensor([1.0, 0.5, 0.0]))
        return NodeOutput(ui={"values": out.flatten().tolist()})


def _prompt() -> dict:
    n = lambda cls, **inputs: {"class_type": cls, "inputs": inputs}  # noqa: E731
    return {
        "1": n("StubSetup"),
        "2": n("MixDQCalibrate", model=["1", 0], guider=["1", 1], sampler=["1", 2], sigmas=["1", 3],
               latent=["1", 4], seed=0, weight_probe_bits="4,8", act_probe_bits="8", bos_aware=True),
        "3": n("MixDQAllocate", sensitivity=["2", 0], method="mixdq", weight_bits=6.0, act_bits=8,
               keep_fp_percent=1.0, bos_aware=True, decoupled=True, save_name="cfg6"),
        "4": n("MixDQQuantize", model=["1", 0], config=["3", 0]),
        "5": n("StubSink", model=["4", 0], memory=["4", 1]),
        "6": n("MixDQSave", model=["4", 0], filename="tiny_w6a8"),
        "7": n("StubSample", model=["4", 0]),
    }


def test_mixdq_graph_runs_saves_and_loads(tmp_path):
    registry = Registry()
    registry.register_pack("mixdq", entrypoint())
    registry.register_pack("stub", [StubSetup, StubSink, StubSample])
    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out")
    result = Executor(registry, CacheSet("lru:64"), paths).execute(_prompt(), prompt_id="p")
    assert result.status == "success", result.error
    assert result.outputs["5"]["kinds"] == ["QuantConv2d", "QuantLinear"]
    assert result.outputs["5"]["compression"][0] > 4.0                 # fp32 -> ~6-bit codes
    config = json.loads((tmp_path / "models" / "quant_configs" / "cfg6.json").read_text())
    assert 4.0 <= config["mean_weight_bits"] <= 6.0 and len(config["keep_fp"]) >= 1
    saved = tmp_path / "models" / "diffusion_models" / "tiny_w6a8.safetensors"
    assert saved.is_file() and saved.with_suffix(".json").is_file()

    load = {"1": _prompt()["1"],
            "2": {"class_type": "QuantizedModelLoader", "inputs": {"base_model": ["1", 0],
                                                                    "quant_name": "tiny_w6a8.safetensors"}},
            "3": {"class_type": "StubSample", "inputs": {"model": ["2", 0]}}}
    # The loader's file list is read from the current Paths during validation, which the executor (as of
    # this writing) runs before it makes its own Paths current: make them current here too.
    with use_paths(paths):
        loaded = Executor(registry, CacheSet("none"), paths).execute(load, prompt_id="q")
    assert loaded.status == "success", loaded.error
    assert loaded.outputs["3"]["values"] == result.outputs["7"]["values"]     # same numerics after reload
