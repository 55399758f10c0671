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


class AlignYourStepsScheduler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="AlignYourStepsScheduler", category="sampling/custom_sampling/schedulers",
                      inputs=[Combo("model_type", ["SD1", "SDXL", "SVD"]), Int("steps", 10, min=1, max=10000),
                              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)],
                      outputs=_sigmas_out())

    @classmethod
    def execute(cls, model_type: str, steps: int, denoise: float) -> NodeOutput:
        from fewstep.nodes.core.schedules import align_your_steps

        return NodeOutput(align_your_steps(model_type, steps, denoise))


class BetaSamplingScheduler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        shape = dict(min=0.0, max=50.0, step=0.01, round=False)
        return Schema(node_id="BetaSamplingScheduler", category="sampling/custom_sampling/schedulers",
                      inputs=[Link("model", "MODEL"), Int("steps", 20, min=1, max=10000), Float("alpha", 0.6, **shape),
                              Float("beta", 0.6, **shape)],
                      outputs=_sigmas_out())

    @classmethod
    def execute(cls, model: Any, steps: int, alpha: float, beta: float) -> NodeOutput:
        from fewstep.nodes.core.schedules import beta as beta_schedule

        return NodeOutput(beta_schedule(model.schedule, steps, alpha, beta).float())


class LaplaceScheduler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="LaplaceScheduler", category="sampling/custom_sampling/schedulers",
                      inputs=[Int("steps", 20, min=1, max=10000), *_range_inputs(),
                              Float("mu", 0.0, min=-10.0, max=10.0, step=0.1, round=False),
                              Float("beta", 0.5, min=0.0, max=10.0, step=0.1, round=False)],
                      outputs=_sigmas_out())

    @classmethod
    def execute(cls, steps: int, sigma_max: float, sigma_min: float, mu: float, beta: float) -> NodeOutput:
        from fewstep.nodes.core.schedules import laplace_sigmas

        return NodeOutput(laplace_sigmas(steps, sigma_min, sigma_max, mu, beta))


class VPScheduler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VPScheduler", category="sampling/custom_sampling/schedulers",
                      inputs=[Int("steps", 20, min=1, max=10000),
                              Float("beta_d", 19.9, min=0.0, max=5000.0, step=0.01, round=False),
                              Float("beta_min", 0.1, min=0.0, max=5000.0, step=0.01, round=False),
                              Float("eps_s", 0.001, min=0.0, max=1.0, step=0.0001, round=False)],
                      outputs=_sigmas_out())

    @classmethod
    def execute(cls, steps: int, beta_d: float, beta_min: float, eps_s: float) -> NodeOutput:
        from fewstep.nodes.core.schedules import vp_sigmas

        return NodeOutput(vp_sigmas(steps, beta_d, beta_min, eps_s))


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


class SetFirstSigma(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SetFirstSigma", category="sampling/custom_sampling/sigmas",
                      inputs=[Link("sigmas", "SIGMAS"), Float("sigma", 136.0, min=0.0, max=20000.0, step=0.001,
                                                                round=False)],
                      outputs=_sigmas_out())

    @classmethod
    def execute(cls, sigmas: torch.Tensor, sigma: float) -> NodeOutput:
        if sigmas.numel() == 0:
            raise ValueError("SetFirstSigma: the SIGMAS list is empty")
        sigmas = sigmas.clone()
        sigmas[0] = sigma
        return NodeOutput(sigmas)


class ExtendIntermediateSigmas(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ExtendIntermediateSigmas", category="sampling/custom_sampling/sigmas",
                      inputs=[Link("sigmas", "SIGMAS"), Int("steps", 2, min=1, max=100),
                              Float("start_at_sigma", -1.0, min=-1.0, max=20000.0, step=0.01, round=False),
                              Float("end_at_sigma", 12.0, min=0.0, max=20000.0, step=0.01, round=False),
                              Combo("spacing", ["linear", "cosine", "sine"])],
                      outputs=_sigmas_out())

    @classmethod
    def execute(cls, sigmas: torch.Tensor, steps: int, start_at_sigma: float, end_at_sigma: float,
                spacing: str) -> NodeOutput:
        from fewstep.nodes.core.schedules import extend_intermediate

        return NodeOutput(extend_intermediate(sigmas, steps, start_at_sigma, end_at_sigma, spacing))


class SamplingPercentToSigma(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplingPercentToSigma", category="sampling/custom_sampling/sigmas",
                      inputs=[Link("model", "MODEL"), Float("sampling_percent", 0.0, min=0.0, max=1.0, step=0.0001),
                              Boolean("return_actual_sigma", False)],
                      outputs=[Output("sigma_value", "FLOAT")])

    @classmethod
    def execute(cls, model: Any, sampling_percent: float, return_actual_sigma: bool) -> NodeOutput:
        from fewstep.nodes.core.conditioning import percent_to_sigma

        # 0 and 1 map to +inf / 0 for range checks; "actual" gives the model's sigma_max / sigma_min there
        if return_actual_sigma and sampling_percent in (0.0, 1.0):
            schedule = model.schedule
            return NodeOutput(float(schedule.sigma_max if sampling_percent == 0.0 else schedule.sigma_min))
        sigma = percent_to_sigma(model.schedule, sampling_percent)
        return NodeOutput(999999999.9 if sigma == float("inf") else sigma)


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


class SamplerEulerAncestralCFGPP(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerEulerAncestralCFGPP", display_name="SamplerEulerAncestralCFG++",
                      category="sampling/custom_sampling/samplers",
                      inputs=[Float("eta", 1.0, min=0.0, max=1.0, step=0.01, round=False),
                              Float("s_noise", 1.0, min=0.0, max=10.0, step=0.01, round=False)],
                      outputs=_sampler_out())

    @classmethod
    def execute(cls, eta: float, s_noise: float) -> NodeOutput:
        from fewstep.nodes.core.samplers import get_sampler

        return NodeOutput(get_sampler("euler_ancestral_cfg_pp", eta=eta, s_noise=s_noise))


class SamplerEulerCFGpp(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerEulerCFGpp", display_name="SamplerEulerCFG++", category="_for_testing",
                      inputs=[Combo("version", ["regular", "alternative"])], outputs=_sampler_out())

    @classmethod
    def execute(cls, version: str) -> NodeOutput:
        from fewstep.nodes.core.samplers import SamplerSpec, get_sampler
        from fewstep.nodes.core.samplers_cfgpp import sample_euler_cfg_pp_alternative

        if version == "alternative":
            return NodeOutput(SamplerSpec("euler_cfg_pp_alternative", sample_euler_cfg_pp_alternative))
        return NodeOutput(get_sampler("euler_cfg_pp"))


class SamplerDPMAdaptative(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        knob = dict(min=0.0, max=100.0, step=0.01, round=False)
        return Schema(node_id="SamplerDPMAdaptative", category="sampling/custom_sampling/samplers",
                      inputs=[Int("order", 3, min=2, max=3), Float("rtol", 0.05, **knob), Float("atol", 0.0078, **knob),
                              Float("h_init", 0.05, **knob), Float("pcoeff", 0.0, **knob), Float("icoeff", 1.0, **knob),
                              Float("dcoeff", 0.0, **knob), Float("accept_safety", 0.81, **knob), _eta(0.0),
                              _s_noise()],
                      outputs=_sampler_out())

    @classmethod
    def execute(cls, order: int, rtol: float, atol: float, h_init: float, pcoeff: float, icoeff: float,
                dcoeff: float, accept_safety: float, eta: float, s_noise: float) -> NodeOutput:
        from fewstep.nodes.core.samplers import get_sampler

        return NodeOutput(get_sampler("dpm_adaptive", order=order, rtol=rtol, atol=atol, h_init=h_init, pcoeff=pcoeff,
                                      icoeff=icoeff, dcoeff=dcoeff, accept_safety=accept_safety, eta=eta,
                                      s_noise=s_noise))


def power_noise_scaler(lam: torch.Tensor, exponent: float) -> torch.Tensor:
    """s(lambda) = lambda^exponent: ER-SDE's noise scale for the reverse-time SDE (exponent eta + 1)."""
    return lam**exponent


class SamplerER_SDE(Node):  # noqa: N801
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerER_SDE", category="sampling/custom_sampling/samplers",
                      inputs=[Combo("solver_type", ["ER-SDE", "Reverse-time SDE", "ODE"]),
                              Int("max_stage", 3, min=1, max=3), _eta(), _s_noise()],
                      outputs=_sampler_out())

    @classmethod
    def execute(cls, solver_type: str, max_stage: int, eta: float, s_noise: float) -> NodeOutput:
        from functools import partial

        from fewstep.nodes.core.samplers import get_sampler

        if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0.0, 0.0
        scaler = None if solver_type == "ER-SDE" else partial(power_noise_scaler, exponent=eta + 1)
        return NodeOutput(get_sampler("er_sde", s_noise=s_noise, max_stage=max_stage, noise_scaler=scaler))


class SamplerSASolver(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerSASolver", category="sampling/custom_sampling/samplers",
                      inputs=[Link("model", "MODEL"), Float("eta", 1.0, min=0.0, max=10.0, step=0.01, round=False),
                              Float("sde_start_percent", 0.2, min=0.0, max=1.0, step=0.001),
                              Float("sde_end_percent", 0.8, min=0.0, max=1.0, step=0.001), _s_noise(),
                              Int("predictor_order", 3, min=1, max=6), Int("corrector_order", 4, min=0, max=6),
                              Boolean("use_pece", False), Boolean("simple_order_2", False)],
                      outputs=_sampler_out())

    @classmethod
    def execute(cls, model: Any, eta: float, sde_start_percent: float, sde_end_percent: float, s_noise: float,
                predictor_order: int, corrector_order: int, use_pece: bool, simple_order_2: bool) -> NodeOutput:
        from fewstep.nodes.core.samplers import get_sampler

        # the SDE window is resolved against the sampled model's own schedule when sampling runs
        return NodeOutput(get_sampler("sa_solver", eta=eta, sde_start_percent=sde_start_percent,
                                      sde_end_percent=sde_end_percent, s_noise=s_noise,
                                      predictor_order=predictor_order, corrector_order=corrector_order,
                                      use_pece=use_pece, simple_order_2=simple_order_2))


class SamplerSEEDS2(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerSEEDS2", category="sampling/custom_sampling/samplers",
                      inputs=[Combo("solver_type", ["phi_1", "phi_2"]), _eta(), _s_noise(),
                              Float("r", 0.5, min=0.01, max=1.0, step=0.01, round=False)],
                      outputs=_sampler_out())

    @classmethod
    def execute(cls, solver_type: str, eta: float, s_noise: float, r: float) -> NodeOutput:
        from fewstep.nodes.core.samplers import get_sampler

        return NodeOutput(get_sampler("seeds_2", eta=eta, s_noise=s_noise, r=r, solver_type=solver_type))


class SamplerLCMUpscale(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SamplerLCMUpscale", category="sampling/custom_sampling/samplers",
                      inputs=[Float("scale_ratio", 1.0, min=0.1, max=20.0, step=0.01),
                              Int("scale_steps", -1, min=-1, max=1000),
                              Combo("upscale_method", ["bislerp", "nearest-exact", "bilinear", "area", "bicubic"])],
                      outputs=_sampler_out())

    @classmethod
    def execute(cls, scale_ratio: float, scale_steps: int, upscale_method: str) -> NodeOutput:
        from fewstep.nodes.core.samplers import SamplerSpec, sample_lcm_upscale

        return NodeOutput(SamplerSpec("lcm_upscale", sample_lcm_upscale, {
            "total_upscale": scale_ratio, "upscale_method": upscale_method,
            "upscale_steps": None if scale_steps < 0 else scale_steps}))


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


class ModelSamplingContinuousV(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        sigma = dict(min=0.0, max=1000.0, step=0.001, round=False)
        return Schema(node_id="ModelSamplingContinuousV", category="advanced/model",
                      inputs=[Link("model", "MODEL"), Combo("sampling", ["v_prediction"]),
                              Float("sigma_max", 500.0, **sigma), Float("sigma_min", 0.03, **sigma)],
                      outputs=[Output("MODEL", "MODEL")])

    @classmethod
    def execute(cls, model: Any, sampling: str, sigma_max: float, sigma_min: float) -> NodeOutput:
        from fewstep.nodes.core.model_sampling import model_sampling_continuous_v

        if sampling != "v_prediction":
            raise ValueError(f"ModelSamplingContinuousV: sampling must be 'v_prediction', got {sampling!r}")
        return NodeOutput(model_sampling_continuous_v(model, sigma_max, sigma_min))


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
    AlignYourStepsScheduler, BetaSamplingScheduler, LaplaceScheduler, VPScheduler,
    ManualSigmas, SplitSigmas, SplitSigmasDenoise, FlipSigmas, SetFirstSigma, ExtendIntermediateSigmas,
    SamplingPercentToSigma, SamplerDPMPP_2M_SDE, SamplerDPMPP_3M_SDE,
    SamplerDPMPP_SDE, SamplerDPMPP_2S_Ancestral, SamplerEulerAncestral, SamplerLMS, SamplerEulerAncestralCFGPP,
    SamplerEulerCFGpp, SamplerDPMAdaptative, SamplerER_SDE, SamplerSASolver, SamplerSEEDS2, SamplerLCMUpscale,
    ModelSamplingDiscrete, ModelSamplingContinuousEDM, ModelSamplingContinuousV, RescaleCFG,
)
