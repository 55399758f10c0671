"""Apply a QUANT_CONFIG to a network, and save / load the result (safetensors + JSON config).

``quantize_network`` swaps every configured nn.Linear / nn.Conv2d for a QuantLinear / QuantConv2d; the
cross-attention K/V projections are wrapped in BOSAwareKV when the config is BOS-aware. The file format of
a quantized network is one ``.safetensors`` with its whole state dict (integer codes, scales, the
unquantized parameters) and the config in the metadata and in a ``.json`` beside it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fewstep.nodes.mixdq.layers import (
    FP_BITS,
    BOSAwareKV,
    QuantConv2d,
    QuantLinear,
    is_bos_layer,
    quantizable_layers,
    set_submodule,
)

CONFIG_KEYS = ("weight_bits", "act_bits", "act_absmax")


def check_config(config: dict[str, Any], layers: dict[str, nn.Module]) -> None:
    """Raise ValueError naming the first problem of ``config`` against the network's ``layers``."""
    for key in CONFIG_KEYS:
        if not isinstance(config.get(key), dict):
            raise ValueError(f"QUANT_CONFIG: missing or non-dict '{key}'")
    for name, bits in config["weight_bits"].items():
        if name not in layers:
            raise ValueError(f"QUANT_CONFIG: layer '{name}' is not a quantizable layer of this model")
        if not (2 <= int(bits) <= 8 or int(bits) >= FP_BITS):
            raise ValueError(f"QUANT_CONFIG: weight bits of '{name}' must be 2..8 or 16, got {bits}")
        a_bits = int(config["act_bits"].get(name, FP_BITS))
        if a_bits < FP_BITS and name not in config["act_absmax"]:
            raise ValueError(f"QUANT_CONFIG: '{name}' has {a_bits}-bit activations but no calibrated range")


def _quant_layer(layer: nn.Module, w_bits: int, a_bits: int, absmax: float | None) -> nn.Module:
    cls = QuantLinear if isinstance(layer, nn.Linear) else QuantConv2d
    return cls.from_float(layer, w_bits, a_bits, absmax)


@torch.no_grad()
def quantize_network(net: nn.Module, config: dict[str, Any], *, inplace: bool = False) -> nn.Module:
    """The network with the configured layers quantized (a deep copy unless ``inplace``)."""
    net = net if inplace else copy.deepcopy(net)
    layers = quantizable_layers(net)
    check_config(config, layers)
    bos = config.get("bos_embedding")
    for name, w_bits in config["weight_bits"].items():
        w_bits, layer = int(w_bits), layers[name]
        if w_bits >= FP_BITS:
            continue                                            # left in floating point
        a_bits = int(config["act_bits"].get(name, FP_BITS))
        new = _quant_layer(layer, w_bits, a_bits, config["act_absmax"].get(name))
        if config.get("bos_aware") and is_bos_layer(name) and isinstance(new, QuantLinear):
            bos_out = None
            if bos is not None:                                 # precompute token 0's K/V in full precision
                e = torch.tensor(bos, dtype=layer.weight.dtype, device=layer.weight.device)
                bos_out = layer(e[None])[0].detach()            # [N]
            new = BOSAwareKV(new, bos_out)
        set_submodule(net, name, new)
    return net


def _skeleton(layer: nn.Module, w_bits: int, a_bits: int) -> nn.Module:
    """An empty quantized layer with ``layer``'s shapes, to load a saved state into."""
    dtype, device = layer.weight.dtype, layer.weight.device
    if isinstance(layer, nn.Linear):
        return QuantLinear(layer.in_features, layer.out_features, w_bits, a_bits,
                           bias=layer.bias is not None, dtype=dtype, device=device)
    return QuantConv2d(layer.in_channels, layer.out_channels, tuple(layer.kernel_size), tuple(layer.stride),
                       tuple(layer.padding), w_bits, a_bits, bias=layer.bias is not None, dtype=dtype,
                       device=device)


def save_quantized(net: nn.Module, config: dict[str, Any], path: str | Path) -> Path:
    """Write ``path`` (.safetensors: the state dict, config in the metadata) and ``path``.json."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"quantized model file must end in .safetensors, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    text = json.dumps(config, sort_keys=True)
    save_file(state, str(path), metadata={"fewstep_mixdq_config": text})
    path.with_suffix(".json").write_text(json.dumps(config, indent=1, sort_keys=True))
    return path


def load_quantized(base: nn.Module, path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved quantized network on a copy of ``base`` (its architecture); returns (net, config)."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if "fewstep_mixdq_config" not in meta:
        raise ValueError(f"{path.name} holds no MixDQ config (not written by save_quantized)")
    config = json.loads(meta["fewstep_mixdq_config"])
    net = copy.deepcopy(base)
    layers = quantizable_layers(net)
    check_config(config, layers)
    state = load_file(str(path))
    for name, w_bits in config["weight_bits"].items():
        if int(w_bits) >= FP_BITS:
            continue
        new = _skeleton(layers[name], int(w_bits), int(config["act_bits"].get(name, FP_BITS)))
        if config.get("bos_aware") and is_bos_layer(name) and isinstance(new, QuantLinear):
            bos_key = f"{name}.bos_out"
            new = BOSAwareKV(new, torch.empty_like(state[bos_key]) if bos_key in state else None)
        set_submodule(net, name, new)
    device = next(iter(net.state_dict().values())).device
    net.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    return net, config
