"""MLCM / LCM nodes: the distillation trainer, the milestone scheduler and the shipped-student loader."""

from __future__ import annotations

from typing import Any

from fewstep.app.api import Combo, Float, Int, Link, Node, NodeOutput, Output, Schema
from fewstep.nodes.core.train.trainer_schema import PASS_THROUGH, common_fields, trainer_inputs


class MLCMDistill(Node):
    """Multistep latent consistency distillation (MLCM stage 1; 1 segment = plain LCM; stage 2 from a student)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="MLCMDistill", display_name="MLCM Distill (multistep consistency)", category="fewstep/distill",
            description="Distils a teacher into one student that samples in 1-8 steps (MLCM / TLCM). "
                        "Checkpoints every N steps into the models folder; a re-run with the same settings resumes. "
                        "The template graphs/mlcm_distill.json is a CPU demo (steps 12, batch_size 4, prompt_count "
                        "64: under a minute on 2 cores). The shipped stage-1 student's recipe, on a GPU: steps "
                        "3000, batch_size 512, learning_rate 0.0003, lora_rank 16 (its model card).",
            inputs=[*trainer_inputs(1e-4, "online"),
                    Combo("stage", ["1: multistep (MLCD)", "2: progressive (between milestones)"],
                          default="1: multistep (MLCD)"),
                    Int("segments", 8, min=1, max=50, tooltip="M; 1 = plain LCM"),
                    Int("teacher_substeps", 1, min=1, max=50, tooltip="teacher DDIM sub-steps over the skip"),
                    Int("student_steps", 4, min=1, max=8, tooltip="stage 2: steps of the student's own samples"),
                    Link("student", "MODEL", optional=True, tooltip="stage 2: the stage-1 student to refine"),
                    # optional widgets: graphs saved before these inputs existed still validate (defaults = off)
                    Float("perceptual_weight", 0.0, min=0.0, max=100.0, step=0.01, round=1e-4, optional=True,
                          tooltip="stage 1: weight of the EfficientNet-Lite0 feature term on decoded images "
                                  "(needs the VAE; 0 = off)"),
                    Float("reward_weight", 0.0, min=0.0, max=100.0, step=0.01, round=1e-4, optional=True,
                          tooltip="stage 1: weight of the zoo-scorer preference hinge (needs the VAE; 0 = off)"),
                    Float("reward_margin", 1.0, min=-1.0, max=1.0, step=0.01, round=1e-4, optional=True,
                          tooltip="hinge relu(margin - score); the score is a cosine, so 1 = always on")],
            outputs=[Output("MODEL", "MODEL")], not_idempotent=False)

    @classmethod
    def execute(cls, **kw: Any) -> NodeOutput:
        stage2 = kw["stage"].startswith("2")
        if stage2 and kw.get("student") is None:
            raise ValueError("MLCMDistill stage 2 needs the stage-1 student connected to 'student'")
        fields = common_fields(kw) | dict(
            method="mlcm_stage2" if stage2 else ("lcm" if kw["segments"] == 1 else "mlcm"),
            num_segments=kw["segments"], substeps=kw["teacher_substeps"], student_steps=kw["student_steps"],
            perceptual_weight=kw.get("perceptual_weight", 0.0), reward_weight=kw.get("reward_weight", 0.0),
            reward_margin=kw.get("reward_margin", 1.0))
        from fewstep.nodes.core.train.distill_graph import run_trainer
        from fewstep.nodes.mlcm.train import zoo_loss

        return run_trainer(fields, zoo_loss, init=kw.get("student"), **{k: kw.get(k) for k in PASS_THROUGH})


class MLCMScheduler(Node):
    """SIGMAS of an N-step MLCM run: TLCM's milestone subset (use with KSamplerSelect 'lcm')."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="MLCMScheduler", display_name="MLCM Milestone Scheduler",
                      category="fewstep/distill/schedulers",
                      inputs=[Link("model", "MODEL"), Int("steps", 4, min=1, max=8),
                              Int("segments", 8, min=1, max=50)],
                      outputs=[Output("SIGMAS", "SIGMAS")])

    @classmethod
    def execute(cls, model: Any, steps: int, segments: int) -> NodeOutput:
        from fewstep.nodes.core.schedules import from_timesteps
        from fewstep.nodes.core.train.consistency import milestone_timesteps

        return NodeOutput(from_timesteps(model.schedule, milestone_timesteps(steps, segments)))


class LCMScheduler(Node):
    """SIGMAS on LCM's skip grid (origin 50 steps): what LCM and SLAM students sample on."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="LCMSkipScheduler", display_name="LCM Skip-Grid Scheduler",
                      category="fewstep/distill/schedulers",
                      inputs=[Link("model", "MODEL"), Int("steps", 4, min=1, max=50),
                              Int("origin_steps", 50, min=1, max=1000)],
                      outputs=[Output("SIGMAS", "SIGMAS")])

    @classmethod
    def execute(cls, model: Any, steps: int, origin_steps: int) -> NodeOutput:
        from fewstep.nodes.core.schedules import from_timesteps
        from fewstep.nodes.core.train.consistency import lcm_timesteps

        return NodeOutput(from_timesteps(model.schedule, lcm_timesteps(steps, origin_steps)))


def _shipped() -> list[str]:
    from fewstep.nodes.mlcm.students import shipped_students

    return shipped_students()


class FewstepStudentLoader(Node):
    """The shipped students of the built-in teacher (LCM, MLCM stage 1/2, SLAM) as MODEL, CLIP, VAE."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="FewstepStudentLoader", display_name="Load Few-step Student",
                      category="fewstep/distill",
                      inputs=[Combo("student_name", _shipped,
                                    tooltip="fewstep/nodes/mlcm/weights: LoRA students merged into the teacher")],
                      outputs=[Output("MODEL", "MODEL"), Output("CLIP", "CLIP"), Output("VAE", "VAE")])

    @classmethod
    def execute(cls, student_name: str) -> NodeOutput:
        from fewstep.nodes.mlcm.students import load_student_model

        return NodeOutput(*load_student_model(student_name))


NODES: list[type[Node]] = [MLCMDistill, MLCMScheduler, LCMScheduler, FewstepStudentLoader]
