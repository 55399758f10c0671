"""MixDQ nodes: thin adapters over the library modules of this pack.

Graph: MODEL + GUIDER + SAMPLER + SIGMAS + LATENT -> MixDQCalibrate -> METRICS -> MixDQAllocate ->
QUANT_CONFIG -> MixDQQuantize(MODEL) -> MODEL; MixDQSave / QuantizedModelLoader store and restore it.
The MODEL's network is ``denoiser.model_fn``, which must be a ``torch.nn.Module``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fewstep.app.api import (
    Boolean,
    Combo,
    Float,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    Schema,
    String,
    current_paths,
    report_progress,
)
from fewstep.nodes.core.train.seeds import fixed_seed

if TYPE_CHECKING:
    import torch

# The library modules (and torch) are imported inside execute: `fewstep nodes` and the server's
# /object_info list the nodes without paying torch's import (about 2 s).

CATEGORY = "fewstep/quantize"
CONFIG_KEY = "mixdq_config"           # where a quantized MODEL keeps its QUANT_CONFIG (denoiser.extras)


def _bits(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError as e:
        raise ValueError(f"{what}: expected comma-separated integers such as '2,4,8', got {text!r}") from e
    if not values or any(not 2 <= v <= 8 for v in values):
        raise ValueError(f"{what}: bit widths must be 2..8, got {text!r}")
    if what == "act_probe_bits" and 8 not in values:
        raise ValueError("act_probe_bits must include 8 (the keep-in-16-bit ranking uses it)")
    return values


class MixDQCalibrate(Node):
    """Calibrate on the model's own few-step samples and probe every layer's sensitivity."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="MixDQCalibrate", display_name="MixDQ Calibrate + Analyze", category=CATEGORY,
            description="Runs the sampler once in full precision (activation ranges), then quantizes each "
                        "linear/conv layer alone at each width: SSIM of samples for cross-attention/FFN "
                        "layers, SQNR of the network output for the others (MixDQ).",
            inputs=[Link("model", "MODEL"), Link("guider", "GUIDER"), Link("sampler", "SAMPLER"),
                    Link("sigmas", "SIGMAS"), Link("latent", "LATENT"), fixed_seed(tooltip="noise seed of the calibration run"),
                    String("weight_probe_bits", "2,4,8"), String("act_probe_bits", "4,8"),
                    Boolean("bos_aware", True)],
            outputs=[Output("sensitivity", "METRICS")],
        )

    @classmethod
    def execute(cls, model: Any, guider: Any, sampler: Any, sigmas: torch.Tensor, latent: dict, seed: int,
                weight_probe_bits: str, act_probe_bits: str, bos_aware: bool) -> NodeOutput:
        from fewstep.nodes.core.threads import tiny_cpu_work
        from fewstep.nodes.mixdq.calibrate import calibrate
        from fewstep.nodes.mixdq.networks import make_runner, network_of
        from fewstep.nodes.mixdq.sensitivity import analyze

        net = network_of(model)
        runner = make_runner(model, guider, sampler, sigmas, latent, seed)
        # one thread for tiny CPU work, as sampling does: the built-in UNet at batch 1 took 1.2 s of CPU per
        # call on 2 threads of the busy 2-core machine (OpenMP workers spinning), which made the ~600 probe
        # calls of a demo calibration run over 10 minutes
        with tiny_cpu_work(next(net.parameters()).device, latent["samples"][0].numel()):
            calib = calibrate(net, runner)
            sens = analyze(net, runner, calib, weight_bits=_bits(weight_probe_bits, "weight_probe_bits"),
                           act_bits=_bits(act_probe_bits, "act_probe_bits"), bos_aware=bos_aware,
                           progress=lambda i, n: report_progress(i, n))
        return NodeOutput(sens.to_metrics())


class MixDQAllocate(Node):
    """Integer-programming bit allocation under an average-bit budget -> QUANT_CONFIG."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="MixDQAllocate", display_name="MixDQ Allocate Bits", category=CATEGORY,
            inputs=[Link("sensitivity", "METRICS"), Combo("method", ["mixdq", "uniform"]),
                    Float("weight_bits", 8.0, min=2.0, max=8.0, step=0.1),
                    Int("act_bits", 8, min=4, max=8), Float("keep_fp_percent", 1.0, min=0.0, max=100.0),
                    Boolean("bos_aware", True), Boolean("decoupled", True),
                    String("save_name", "", tooltip="if set, also written to quant_configs/<name>.json"),
                    Boolean("content_2bit", True, optional=True,
                            tooltip="2-bit weights allowed for cross-attention / FFN layers (MixDQ's {2,4,8}); "
                                    "off = {4,8}: on the zoo student W4A8 kept attribute accuracy that way "
                                    "(0.867 vs 0.811, fewstep/nodes/mixdq/README.md)"),
                    String("act_choices", "", optional=True,
                           tooltip="activation widths the integer program may mix, e.g. '4,8' (MixDQ's "
                                   "mixed-precision activations, each width probed by MixDQ Calibrate); "
                                   "empty = every layer not kept 16-bit at act_bits"),
                    Float("act_budget", 7.7, min=2.0, max=8.0, step=0.05, optional=True,
                          tooltip="mean activation bits of the layers not kept 16-bit (weighted by their "
                                  "input size) when act_choices lists several widths; MixDQ: 7.7")],
            outputs=[Output("config", "QUANT_CONFIG")],
        )

    @classmethod
    def execute(cls, sensitivity: dict, method: str, weight_bits: float, act_bits: int,
                keep_fp_percent: float, bos_aware: bool, decoupled: bool, save_name: str,
                content_2bit: bool = True, act_choices: str = "", act_budget: float = 7.7) -> NodeOutput:
        from fewstep.nodes.mixdq.allocate import mixdq_config, uniform_config
        from fewstep.nodes.mixdq.sensitivity import Sensitivity

        sens = Sensitivity.from_metrics(sensitivity)
        if method == "uniform":
            config = uniform_config(sens, round(weight_bits), act_bits)
        else:
            choices = _bits(act_choices, "act_choices") if act_choices.strip() else (act_bits,)
            config = mixdq_config(sens, weight_bits, act_budget if len(choices) > 1 else act_bits,
                                  keep_fp_frac=keep_fp_percent / 100.0, bos_aware=bos_aware, decoupled=decoupled,
                                  content_bits=(2, 4, 8) if content_2bit else (4, 8), act_bits=choices)
        if save_name:
            if "/" in save_name or "\\" in save_name or save_name.startswith("."):
                raise ValueError(f"save_name must be a plain file name, got {save_name!r}")
            folder = current_paths().model_dirs("quant_configs")[0]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{save_name}.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        return NodeOutput(config)


class MixDQQuantize(Node):
    """Replace the MODEL's linear/conv layers by low-bit ones (Triton kernels on CUDA, simulated on CPU)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="MixDQQuantize", display_name="MixDQ Quantize Model", category=CATEGORY,
            inputs=[Link("model", "MODEL"), Link("config", "QUANT_CONFIG")],
            outputs=[Output("model", "MODEL"), Output("memory", "METRICS")],
        )

    @classmethod
    def execute(cls, model: Any, config: dict) -> NodeOutput:
        from fewstep.nodes.mixdq.layers import weight_bytes
        from fewstep.nodes.mixdq.networks import network_of, with_network
        from fewstep.nodes.mixdq.quantize import quantize_network

        net = network_of(model)
        qnet = quantize_network(net, config)
        before, after = weight_bytes(net), weight_bytes(qnet)
        memory = {"weight_bytes_fp": before, "weight_bytes_quant": after, "compression": before / max(after, 1),
                  "mean_weight_bits": float(config.get("mean_weight_bits", 0.0))}
        return NodeOutput(with_network(model, qnet, **{CONFIG_KEY: config}), memory)


def _diffusion_models() -> list[str]:
    return current_paths().list_models("diffusion_models", (".safetensors",))


class MixDQSave(Node):
    """Write a quantized MODEL as diffusion_models/<name>.safetensors (+ .json config beside it)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="MixDQSave", display_name="MixDQ Save Quantized Model", category=CATEGORY,
                      inputs=[Link("model", "MODEL"), String("filename", "mixdq_model")],
                      outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, model: Any, filename: str) -> NodeOutput:
        from fewstep.nodes.mixdq.networks import network_of
        from fewstep.nodes.mixdq.quantize import save_quantized

        config = model.extras.get(CONFIG_KEY)
        if config is None:
            raise ValueError("MixDQSave: the MODEL is not quantized (connect MixDQQuantize's output)")
        if not filename or "/" in filename or "\\" in filename or filename.startswith("."):
            raise ValueError(f"MixDQSave: filename must be a plain name, got {filename!r}")
        folder = current_paths().model_dirs("diffusion_models")[0]
        path = save_quantized(network_of(model), config, folder / f"{filename}.safetensors")
        return NodeOutput(ui={"text": [str(path)]})


class QuantizedModelLoader(Node):
    """Load a saved MixDQ model onto the architecture of a base MODEL (same network class)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="QuantizedModelLoader", display_name="Load MixDQ Quantized Model",
                      category=CATEGORY,
                      inputs=[Link("base_model", "MODEL"), Combo("quant_name", _diffusion_models)],
                      outputs=[Output("model", "MODEL")])

    @classmethod
    def execute(cls, base_model: Any, quant_name: str) -> NodeOutput:
        from fewstep.nodes.mixdq.networks import network_of, with_network
        from fewstep.nodes.mixdq.quantize import load_quantized

        path = current_paths().find_model("diffusion_models", quant_name)
        net, config = load_quantized(network_of(base_model), path)
        return NodeOutput(with_network(base_model, net, **{CONFIG_KEY: config}))


NODES = [MixDQCalibrate, MixDQAllocate, MixDQQuantize, MixDQSave, QuantizedModelLoader]
