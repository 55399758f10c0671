"""MixDQ nodes take the MODEL and GUIDER links of the core nodes: a loader's MODEL runs a ``UNetFn`` around a
diffusers UNet (not an nn.Module itself) and a GUIDER link is a ``GuiderSpec`` built per latent shape;
both used to fail ("needs a MODEL whose network is a torch.nn.Module; got UNetFn", "the GUIDER must
expose the denoiser")."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from fewstep.nodes.core.loaders import UNetFn
from fewstep.nodes.mixdq.networks import make_runner, network_of, with_network


@dataclasses.dataclass
class _Model:
    model_fn: Any
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    def clone(self, **changes: Any) -> _Model:
        return dataclasses.replace(self, **changes)


def test_network_of_a_core_model_is_the_unet_it_wraps() -> None:
    unet, other = nn.Linear(2, 2), nn.Linear(2, 2)
    model = _Model(UNetFn(unet))
    assert network_of(model) is unet
    swapped = with_network(model, other, quant="w8a8")
    assert isinstance(swapped.model_fn, UNetFn) and swapped.model_fn.unet is other   # still callable the same way
    assert swapped.extras == {"quant": "w8a8"} and model.model_fn.unet is unet       # the original is untouched
    plain = _Model(unet)
    assert network_of(plain) is unet and with_network(plain, other).model_fn is other


def test_calibration_runner_builds_a_core_guider_spec() -> None:
    built: list[Any] = []

    class _Spec:   # stands for core's GuiderSpec: a GUIDER link built into a guider per latent
        def build(self, latent: torch.Tensor) -> Any:
            built.append(latent.shape)
            return type("Guider", (), {"denoiser": None})()

    def sampler(guider: Any, x: torch.Tensor, sigmas: torch.Tensor, **_: Any) -> torch.Tensor:
        assert guider.denoiser.model_fn.unet is net
        return x

    net = nn.Linear(2, 2)
    runner = make_runner(_Model(UNetFn(nn.Linear(2, 2))), _Spec(), sampler, torch.tensor([1.0, 0.0]),
                         {"samples": torch.zeros(1, 4, 2, 2)}, seed=0)
    assert runner(net).shape == (1, 4, 2, 2) and built == [torch.Size([1, 4, 2, 2])]
