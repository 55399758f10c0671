"""DiSA node: a head-step schedule for the MAR Sampler (its optional HEAD_STEP_SCHEDULE input)."""

from __future__ import annotations

from fewstep.app.api import Combo, Int, Node, NodeOutput, Output, Schema

CATEGORY = "fewstep/autoregressive/disa"


class DiSAHeadSteps(Node):
    """Diffusion-step annealing: many head steps for the first AR iterations, few for the last (training-free)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="DiSAHeadSteps", display_name="DiSA Head-Step Schedule", category=CATEGORY,
            description="Steps of the MAR diffusion head at AR iteration k of K, falling from upper to lower "
                        "(linear: T = lower + floor((1 - k/(K-1))(upper - lower)); cosine: half cosine; two-stage: "
                        "upper then lower at K/2; constant: lower throughout, the paper's control). Connect to "
                        "the MAR Sampler's head_step_schedule.",
            inputs=[Combo("strategy", ["linear", "cosine", "two-stage", "constant"], default="linear"),
                    Int("upper_steps", 50, min=1, max=1000, tooltip="head steps at the first iteration (paper: 50)"),
                    Int("lower_steps", 5, min=1, max=1000, tooltip="head steps at the last iteration (paper: 5)")],
            outputs=[Output("HEAD_STEP_SCHEDULE", "HEAD_STEP_SCHEDULE")])

    @classmethod
    def execute(cls, strategy: str, upper_steps: int, lower_steps: int) -> NodeOutput:
        from fewstep.nodes.disa.schedules import make_schedule

        return NodeOutput(make_schedule(strategy, upper_steps, lower_steps))


NODES: tuple[type[Node], ...] = (DiSAHeadSteps,)
