"""SLAM node: sub-path linear approximation distillation (sample the student with LCMSkipScheduler + 'lcm')."""

from __future__ import annotations

from typing import Any

from fewstep.app.api import Int, Node, NodeOutput, Output, Schema
from fewstep.nodes.core.train.trainer_schema import PASS_THROUGH, common_fields, trainer_inputs


class SLAMDistill(Node):
    """SLAM: consistency on γ-interpolated sub-path points, γ through the UNet's guidance-embedding input."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="SLAMDistill", display_name="SLAM Distill (sub-path linear approximation)",
            category="fewstep/distill",
            description="Distils a teacher with SLAM (EMA target at γ = 1, LCM boundary scalings, pseudo-Huber). "
                        "The γ input is folded out at γ = 1, so the output MODEL has the teacher's architecture.",
            inputs=[*trainer_inputs(1e-4, "ema"),
                    Int("gamma_dim", 256, min=2, max=1024, tooltip="γ-embedding size (UNet time_cond_proj_dim)")],
            outputs=[Output("MODEL", "MODEL")])

    @classmethod
    def execute(cls, **kw: Any) -> NodeOutput:
        from fewstep.nodes.core.train.distill_graph import run_trainer
        from fewstep.nodes.slam.loss import node_loss

        fields = common_fields(kw) | dict(method="slam", gamma_dim=kw["gamma_dim"])
        return run_trainer(fields, node_loss, **{k: kw.get(k) for k in PASS_THROUGH})


NODES: list[type[Node]] = [SLAMDistill]
