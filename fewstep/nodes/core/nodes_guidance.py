"""ComfyUI's GITS and Optimal Steps schedulers, AddNoise, DualCFGGuider and APG (adaptive projected guidance).

Names, inputs, defaults, ranges and outputs follow ComfyUI's ``comfy_extras`` nodes of the same names. The
math: ``nodes.core.schedule_tables``, ``sampling.add_noise``, ``nodes.core.dual_cfg``, ``nodes.core.apg``.
"""

from __future__ import annotations

from typing import Any

from fewstep.app.api import Combo, Float, Input, Int, Link, Node, NodeOutput, Output, Schema

GITS_COEFF_RANGE = dict(min=0.80, max=1.50, step=0.05)


def _denoise() -> Input:
    return Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)


class GITSScheduler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="GITSScheduler", category="sampling/custom_sampling/schedulers",
                      inputs=[Float("coeff", 1.20, **GITS_COEFF_RANGE), Int("steps", 10, min=2, max=1000), _denoise()],
                      outputs=[Output("SIGMAS", "SIGMAS")])

    @classmethod
    def execute(cls, coeff: float, steps: int, denoise: float) -> NodeOutput:
        from fewstep.nodes.core.schedule_tables import gits_sigmas

        return NodeOutput(gits_sigmas(coeff, steps, denoise))


class OptimalStepsScheduler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="OptimalStepsScheduler", category="sampling/custom_sampling/schedulers",
                      inputs=[Combo("model_type", ["FLUX", "Wan", "Chroma"]), Int("steps", 20, min=3, max=1000),
                              _denoise()],
                      outputs=[Output("SIGMAS", "SIGMAS")])

    @classmethod
    def execute(cls, model_type: str, steps: int, denoise: float) -> NodeOutput:
        from fewstep.nodes.core.schedule_tables import optimal_steps_sigmas

        return NodeOutput(optimal_steps_sigmas(model_type, steps, denoise))


class AddNoise(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="AddNoise", category="_for_testing/custom_sampling/noise",
                      inputs=[Link("model", "MODEL"), Link("noise", "NOISE"), Link("sigmas", "SIGMAS"),
                              Link("latent_image", "LATENT")],
                      outputs=[Output("LATENT", "LATENT")])

    @classmethod
    def execute(cls, model: Any, noise: Any, sigmas: Any, latent_image: dict) -> NodeOutput:
        from fewstep.nodes.core.sampling import add_noise

        return NodeOutput(add_noise(model, noise, sigmas, latent_image))


class DualCFGGuider(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        cfg = dict(min=0.0, max=100.0, step=0.1, round=0.01)
        return Schema(node_id="DualCFGGuider", category="sampling/custom_sampling/guiders",
                      inputs=[Link("model", "MODEL"), Link("cond1", "CONDITIONING"), Link("cond2", "CONDITIONING"),
                              Link("negative", "CONDITIONING"), Float("cfg_conds", 8.0, **cfg),
                              Float("cfg_cond2_negative", 8.0, **cfg), Combo("style", ["regular", "nested"])],
                      outputs=[Output("GUIDER", "GUIDER")])

    @classmethod
    def execute(cls, model: Any, cond1: Any, cond2: Any, negative: Any, cfg_conds: float,
                cfg_cond2_negative: float, style: str = "regular") -> NodeOutput:
        from fewstep.nodes.core.dual_cfg import DualCFGGuiderSpec

        if style not in ("regular", "nested"):
            raise ValueError(f"DualCFGGuider: style must be 'regular' or 'nested', got {style!r}")
        return NodeOutput(DualCFGGuiderSpec(model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative,
                                            nested=style == "nested"))


class APG(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="APG", display_name="Adaptive Projected Guidance", category="sampling/custom_sampling",
                      inputs=[Link("model", "MODEL"),
                              Float("eta", 1.0, min=-10.0, max=10.0, step=0.01,
                                    tooltip="Scale of the guidance component parallel to the conditional "
                                            "prediction; 1 keeps it as CFG does."),
                              Float("norm_threshold", 5.0, min=0.0, max=50.0, step=0.1,
                                    tooltip="Clip the guidance vector's norm to this value; 0 disables it."),
                              Float("momentum", 0.0, min=-5.0, max=1.0, step=0.01,
                                    tooltip="Running average of the guidance over the sampling; 0 disables it.")],
                      outputs=[Output("MODEL", "MODEL")])

    @classmethod
    def execute(cls, model: Any, eta: float, norm_threshold: float, momentum: float) -> NodeOutput:
        from fewstep.nodes.core.apg import APGSettings

        # read by conditioning.ComposedGuider, which CFGGuider / BasicGuider / KSampler build for it
        settings = APGSettings(float(eta), float(norm_threshold), float(momentum))
        return NodeOutput(model.clone(extras={**model.extras, "apg": settings}))


NODES: tuple[type[Node], ...] = (GITSScheduler, OptimalStepsScheduler, AddNoise, DualCFGGuider, APG)
