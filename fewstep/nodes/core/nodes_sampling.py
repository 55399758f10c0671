"""ComfyUI's custom-sampling nodes: SamplerCustom, schedulers that output SIGMAS (SDXL Turbo's, Karras,
exponential, manual), sigma surgery (split, flip), sampler nodes with knobs, and model patches that change
how a model samples (ModelSamplingDiscrete / ContinuousEDM, RescaleCFG).

Names, inputs, defaults, ranges and outputs follow ComfyUI's ``comfy_extras/nodes_custom_sampler.py`` and
``nodes_model_advanced.py``. SIGMAS is a 1-D float tensor, decreasing, normally ending in 0 (style principle 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewstep.app.api import Boolean, Combo, Float, Int, Link, Node, NodeOutput, Output, Schema, String
from fewstep.nodes.core.nodes import SEED_MAX, _cfg

if TYPE_CHECKING:
    import torch

NOISE_DEVICES = ["gpu", "cpu"]


def _sigmas_out() -> list[Output]:
    return [Output("SIGMAS", "SIGMAS")]


def _sampler_out() -> list[Output]:
    return [Output("SAMPLER", "SAMPLER")]


class SamplerCustom(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerCustom", category="sampling/custom_sampling",
                      inputs=[Link("model", "MODEL"), Boolean("add_noise", True),
                              Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True), _cfg(),
                              Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"),
                              Link("sampler", "SAMPLER"), Link("sigmas", "SIGMAS"), Link("latent_image", "LATENT")],
                      outputs=[Output("output", "LATENT"), Output("denoised_output", "LATENT")])

    @classmethod
    def execute(cls, model: Any, add_noise: bool, noise_seed: int, cfg: float, positive: Any, negative: Any,
                sampler: Any, sigmas: torch.Tensor, latent_image: dict) -> NodeOutput:
        from fewstep.nodes.core import sampling

        noise = sampling.RandomNoiseSpec(noise_seed) if add_noise else sampling.DisableNoise(noise_seed)
        guider = sampling.GuiderSpec(model, positive, negative, cfg)
        return NodeOutput(*sampling.run(guider, sampler, sigmas, latent_image, noise))


class DisableNoise(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="DisableNoise", category="sampling/custom_sampling/noise",
                      outputs=[Output("NOISE", "NOISE")])

    @classmethod
    def execute(cls) -> NodeOutput:
        from fewstep.nodes.core.sampling import DisableNoise as Zeros

        return NodeOutput(Zeros())


# -- schedulers ------------------------------------------------------------------------------------------


class SDTurboScheduler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SDTurboScheduler", category="sampling/custom_sampling/schedulers",
                      inputs=[Link("model", "MODEL"), Int("steps", 1, min=1, max=10),
                              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)],
                      outputs=_sigmas_out())

    @classmethod
    def execute(cls, model: Any, steps: int, denoise: float) -> NodeOutput:
        from fewstep.nodes.core.schedules import sd_turbo_sigmas

        return NodeOutput(sd_turbo_sigmas(model.schedule, steps, denoise))


def _range_inputs() -> list[Any]:
    return [Float("sigma_max", 14.614642, min=0.0, max=5000.0, step=0.01, round=False),
            Float("sigma_min", 0.0291675, min=0.0, max=5000.0, step=0.01, round=False)]


class KarrasScheduler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="KarrasScheduler", category="sampling/custom_sampling/schedulers",
                      inputs=[Int("steps", 20, min=1, max=10000), *_range_inputs(),
                              Float("rho", 7.0, min=0.0, max=100.0, step=0.01, round=False)],
                      outputs=_sigmas_out())

    @classmethod
    def execute(cls, steps: int, sigma_max: float, sigma_min: float, rho: float) -> NodeOutput:
        from fewstep.nodes.core.schedules import SigmaRange, karras

        return NodeOutput(karras(SigmaRange(sigma_min, sigma_max), steps, rho).float())


class ExponentialScheduler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ExponentialScheduler", category="sampling/custom_sampling/schedulers",
                      inputs=[Int("steps", 20, min=1, max=10000), *_range_inputs()], outputs=_sigmas_out())

    @classmethod
    def execute(cls, steps: int, sigma_max: float, sigma_min: float) -> NodeOutput:
        from fewstep.nodes.core.schedules import SigmaRange, exponential

        return NodeOutput(exponential(SigmaRange(sigma_min, sigma_max), steps).float())


class PolyexponentialScheduler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="PolyexponentialScheduler", category="sampling/custom_sampling/schedulers",
                      inputs=[Int("steps", 20, min=1, max=10000), *_range_inputs(),
                              Float("rho", 1.0, min=0.0, max=100.0, step=0.01, round=False)],
                      outputs=_sigmas_out())

    @classmethod
    def execute(cls, steps: int, sigma_max: float, sigma_min: float, rho: float) -> NodeOutput:
        from fewstep.nodes.core.schedules import polyexponential_sigmas

        return NodeOutput(polyexponential_sigmas(steps, sigma_min, sigma_max, rho))


class ManualSigmas(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ManualSigmas", category="_for_testing/custom_sampling",
                      inputs=[String("sigmas", "1, 0.5", multiline=False)], outputs=_sigmas_out())

    @classmethod
    def execute(cls, sigmas: str) -> NodeOutput:
        import re

        import torch

        values = [float(v) for v in re.findall(r"[-+]?(?:\d*\.\d+|\d+\.?)(?:[eE][-+]?\d+)?", sigmas)]
        return NodeOutput(torch.tensor(values, dtype=torch.float32))


class SplitSigmas(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SplitSigmas", category="sampling/custom_sampling/sigmas",
                      inputs=[Link("sigmas", "SIGMAS"), Int("step", 0, min=0, max=10000)],
                      outputs=[Output("high_sigmas", "SIGMAS"), Output("low_sigmas", "SIGMAS")])

    @classmethod
    def execute(cls, sigmas: torch.Tensor, step: int) -> NodeOutput:
        # both halves share sigmas[step]: the first ends where the second starts
        return NodeOutput(sigmas[:step + 1], sigmas[step:])


class SplitSigmasDenoise(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SplitSigmasDenoise", category="sampling/custom_sampling/sigmas",
                      inputs=[Link("sigmas", "SIGMAS"), Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)],
                      outputs=[Output("high_sigmas", "SIGMAS"), Output("low_sigmas", "SIGMAS")])

    @classmethod
    def execute(cls, sigmas: torch.Tensor, denoise: float) -> NodeOutput:
        steps = max(sigmas.shape[-1] - 1, 0)
        total = round(steps * denoise)
        # as ComfyUI: denoise 0 leaves the high part empty and the low part the final sigma
        return NodeOutput(sigmas[:-total] if total else sigmas[:0], sigmas[-(total + 1):])


class FlipSigmas(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="FlipSigmas", category="sampling/custom_sampling/sigmas",
                      inputs=[Link("sigmas", "SIGMAS")], outputs=_sigmas_out())

    @classmethod
    def execute(cls, sigmas: torch.Tensor) -> NodeOutput:
        # increasing sigmas (for inversion); a leading 0 becomes 1e-4 so the first step can divide by it
        if sigmas.numel() == 0:
            return NodeOutput(sigmas)
        flipped = sigmas.flip(0).clone()
        if float(flipped[0]) == 0.0:
            flipped[0] = 0.0001
        return NodeOutput(flipped)


# -- samplers with knobs ---------------------------------------------------------------------------------


def _eta(default: float = 1.0) -> Any:
    return Float("eta", default, min=0.0, max=100.0, step=0.01, round=False)


def _s_noise() -> Any:
    return Float("s_noise", 1.0, min=0.0, max=100.0, step=0.01, round=False)


class SamplerDPMPP_2M_SDE(Node):  # noqa: N801 - ComfyUI's class name
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerDPMPP_2M_SDE", category="sampling/custom_sampling/samplers",
                      inputs=[Combo("solver_type", ["midpoint", "heun"]), _eta(), _s_noise(),
                              Combo("noise_device", NOISE_DEVICES)],
                      outputs=_sampler_out())

    @classmethod
    def execute(cls, solver_type: str, eta: float, s_noise: float, noise_device: str) -> NodeOutput:
        from fewstep.nodes.core.samplers import get_sampler

        # noise_device: our Brownian noise always lives on the CPU (the same images on every device)
        return NodeOutput(get_sampler("dpmpp_2m_sde", eta=eta, s_noise=s_noise, solver_type=solver_type))


class SamplerDPMPP_3M_SDE(Node):  # noqa: N801
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerDPMPP_3M_SDE", category="sampling/custom_sampling/samplers",
                      inputs=[_eta(), _s_noise(), Combo("noise_device", NOISE_DEVICES)], outputs=_sampler_out())

    @classmethod
    def execute(cls, eta: float, s_noise: float, noise_device: str) -> NodeOutput:
        from fewstep.nodes.core.samplers import get_sampler

        return NodeOutput(get_sampler("dpmpp_3m_sde", eta=eta, s_noise=s_noise))


class SamplerDPMPP_SDE(Node):  # noqa: N801
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerDPMPP_SDE", category="sampling/custom_sampling/samplers",
                      inputs=[_eta(), _s_noise(), Float("r", 0.5, min=0.0, max=100.0, step=0.01, round=False),
                              Combo("noise_device", NOISE_DEVICES)],
                      outputs=_sampler_out())

    @classmethod
    def execute(cls, eta: float, s_noise: float, r: float, noise_device: str) -> NodeOutput:
        from fewstep.nodes.core.samplers import get_sampler

        return NodeOutput(get_sampler("dpmpp_sde", eta=eta, s_noise=s_noise, r=r))


class SamplerDPMPP_2S_Ancestral(Node):  # noqa: N801
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerDPMPP_2S_Ancestral", category="sampling/custom_sampling/samplers",
                      inputs=[_eta(), _s_noise()], outputs=_sampler_out())

    @classmethod
    def execute(cls, eta: float, s_noise: float) -> NodeOutput:
        from fewstep.nodes.core.samplers import get_sampler

        return NodeOutput(get_sampler("dpmpp_2s_ancestral", eta=eta, s_noise=s_noise))


class SamplerEulerAncestral(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerEulerAncestral", category="sampling/custom_sampling/samplers",
                      inputs=[_eta(), _s_noise()], outputs=_sampler_out())

    @classmethod
    def execute(cls, eta: float, s_noise: float) -> NodeOutput:
        from fewstep.nodes.core.samplers import get_sampler

        return NodeOutput(get_sampler("euler_ancestral", eta=eta, s_noise=s_noise))


class SamplerLMS(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerLMS", category="sampling/custom_sampling/samplers",
                      inputs=[Int("order", 4, min=1, max=100)], outputs=_sampler_out())

    @classmethod
    def execute(cls, order: int) -> NodeOutput:
        from fewstep.nodes.core.samplers import get_sampler

        return NodeOutput(get_sampler("lms", order=order))


# -- model patches ---------------------------------------------------------------------------------------


class ModelSamplingDiscrete(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ModelSamplingDiscrete", category="advanced/model",
                      inputs=[Link("model", "MODEL"), Combo("sampling", ["eps", "v_prediction", "lcm", "x0"]),
                              Boolean("zsnr", False)],
                      outputs=[Output("MODEL", "MODEL")])

    @classmethod
    def execute(cls, model: Any, sampling: str, zsnr: bool) -> NodeOutput:
        from fewstep.nodes.core.model_sampling import model_sampling_discrete

        return NodeOutput(model_sampling_discrete(model, sampling, zsnr))


class ModelSamplingContinuousEDM(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        sigma = dict(min=0.0, max=1000.0, step=0.001, round=False)
        return Schema(node_id="ModelSamplingContinuousEDM", category="advanced/model",
                      inputs=[Link("model", "MODEL"),
                              Combo("sampling", ["v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow"]),
                              Float("sigma_max", 120.0, **sigma), Float("sigma_min", 0.002, **sigma)],
                      outputs=[Output("MODEL", "MODEL")])

    @classmethod
    def execute(cls, model: Any, sampling: str, sigma_max: float, sigma_min: float) -> NodeOutput:
        from fewstep.nodes.core.model_sampling import model_sampling_edm

        return NodeOutput(model_sampling_edm(model, sampling, sigma_max, sigma_min))


class RescaleCFG(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="RescaleCFG", category="advanced/model",
                      inputs=[Link("model", "MODEL"), Float("multiplier", 0.7, min=0.0, max=1.0, step=0.01)],
                      outputs=[Output("MODEL", "MODEL")])

    @classmethod
    def execute(cls, model: Any, multiplier: float) -> NodeOutput:
        # read by conditioning.ComposedGuider (Lin et al. 2024, eq. 15-16)
        return NodeOutput(model.clone(extras={**model.extras, "rescale_cfg": float(multiplier)}))


NODES: tuple[type[Node], ...] = (
    SamplerCustom, DisableNoise, SDTurboScheduler, KarrasScheduler, ExponentialScheduler, PolyexponentialScheduler,
    ManualSigmas, SplitSigmas, SplitSigmasDenoise, FlipSigmas, SamplerDPMPP_2M_SDE, SamplerDPMPP_3M_SDE,
    SamplerDPMPP_SDE, SamplerDPMPP_2S_Ancestral, SamplerEulerAncestral, SamplerLMS, ModelSamplingDiscrete,
    ModelSamplingContinuousEDM, RescaleCFG,
)
