"""R0 nodes: the reward-only trainer (student MODEL + its η-DDIM SAMPLER and SIGMAS), the R0 scheduler and the
shipped-student loader."""

from __future__ import annotations

from typing import Any

from fewstep.app.api import Boolean, Combo, Float, Int, Link, Node, NodeOutput, Output, Schema, String
from fewstep.nodes.core.train.seeds import fixed_seed

CATEGORY = "fewstep/rewards"
DEFAULT_PROMPTS = "a small red circle at the top left\ntwo large blue squares\na large green cross left of a small white diamond"
REWARD_SLOTS = 3


def sampler_outputs(model: Any, steps: int, eta: float) -> tuple[Any, Any]:
    """(SAMPLER, SIGMAS) that sample an R0 student as it was trained: core DDIM with fixed η on the trailing grid."""
    from fewstep.nodes.core.samplers import get_sampler
    from fewstep.nodes.core.schedules import from_timesteps
    from fewstep.nodes.r0.generator import trailing_timesteps

    return get_sampler("ddim", eta=eta), from_timesteps(model.schedule, trailing_timesteps(steps))


class R0Train(Node):
    """R0: a few-step generator trained on rewards only, regularised toward the pretrained weights."""

    @classmethod
    def define_schema(cls) -> Schema:
        rewards: list[Any] = []
        for i in range(1, REWARD_SLOTS + 1):
            rewards += [Link(f"reward_{i}", "REWARD_MODEL", optional=i > 1),
                        Float(f"weight_{i}", 1.0, min=0.0, max=100.0, step=0.01, round=1e-4, optional=i > 1)]
        return Schema(
            node_id="R0Train", display_name="R0 Train (regularised reward maximisation)", category=CATEGORY,
            description="Fine-tunes the model's own few-step η-DDIM sampler to maximise the connected rewards "
                        "(no images, no distillation loss). Checkpoints into the models folder; a re-run with the "
                        "same settings resumes. Outputs the student with the sampler and sigmas it was trained for.",
            inputs=[
                Link("model", "MODEL", tooltip="the pretrained diffusion model (initialisation and anchor)"),
                Link("clip", "CLIP"), Link("vae", "VAE", tooltip="decodes with gradients for the rewards"),
                *rewards,
                Combo("prompt_source", ["procedural", "list"], default="procedural",
                      tooltip="procedural: captions of the built-in scene generator; list: the prompts below"),
                String("prompts", DEFAULT_PROMPTS, multiline=True), Int("prompt_count", 512, min=1, max=1_000_000),
                Int("steps", 400, min=1, max=10_000_000), Int("batch_size", 32, min=1, max=4096),
                Float("learning_rate", 3e-4, min=0.0, max=1.0, step=1e-6, round=1e-7),
                Int("sampler_steps", 4, min=1, max=50, tooltip="K, the generator's steps (trailing grid)"),
                Float("cfg", 5.0, min=1.0, max=30.0, step=0.1, tooltip="CFG inside the generator (1 = none)"),
                Float("weight_reg", 2000.0, min=0.0, max=1e7, step=1.0, round=1e-3,
                      tooltip="λ of λ‖θ−θ0‖²/‖θ0‖² (0 = off)"),
                Boolean("random_eta", True, tooltip="η ~ U[0,1] per sample in training (R0's regulariser)"),
                Float("eta", 0.0, min=0.0, max=1.0, step=0.05, tooltip="fixed η at test (and in training without random η)"),
                Boolean("normalize_grads", True, tooltip="scale each reward's per-image gradient to unit norm"),
                Float("intermediate_weight", 0.0, min=0.0, max=100.0, step=0.05, round=1e-4,
                      tooltip="R0+: weight of the rewards on the earlier steps' x̂0 (0 = off)"),
                Int("lora_rank", 16, min=0, max=256, tooltip="0 = full fine-tune, else LoRA rank (peft)"),
                fixed_seed(),
                String("run_name", "r0", tooltip="checkpoints go to <models>/checkpoints/r0/<run_name>-<hash>"),
                Int("checkpoint_every", 100, min=0, max=10_000_000), Int("preview_every", 50, min=0, max=10_000_000),
            ],
            outputs=[Output("MODEL", "MODEL"), Output("SAMPLER", "SAMPLER"), Output("SIGMAS", "SIGMAS")])

    @classmethod
    def execute(cls, **kw: Any) -> NodeOutput:
        from fewstep.nodes.core.train.prompts import prompt_list
        from fewstep.nodes.r0.graph_train import combine, train_student
        from fewstep.nodes.r0.train import R0Config

        cfg = R0Config(steps=kw["steps"], batch_size=kw["batch_size"], lr=kw["learning_rate"],
                       sampler_steps=kw["sampler_steps"], guidance=kw["cfg"], weight_reg=kw["weight_reg"],
                       random_eta=kw["random_eta"], eta=kw["eta"], normalize_grads=kw["normalize_grads"],
                       intermediate_weight=kw["intermediate_weight"], lora_rank=kw["lora_rank"], seed=kw["seed"],
                       rewards=(("graph", 1.0),))
        rewards = combine([(kw[f"reward_{i}"], float(kw.get(f"weight_{i}", 1.0))) for i in range(1, REWARD_SLOTS + 1)
                           if kw.get(f"reward_{i}") is not None], kw["normalize_grads"])
        texts = prompt_list(kw["prompt_source"], kw["prompts"], kw["prompt_count"], kw["seed"])
        student, losses, history = train_student(kw["model"], kw["clip"], kw["vae"], rewards, cfg, prompts=texts,
                                                 run_name=kw["run_name"], checkpoint_every=kw["checkpoint_every"],
                                                 preview_every=kw["preview_every"])
        sampler, sigmas = sampler_outputs(student, kw["sampler_steps"], kw["eta"])
        return NodeOutput(student, sampler, sigmas,
                          ui={"loss": losses, "reward": [h["reward"] for h in history]})


class R0Scheduler(Node):
    """SIGMAS of an R0 student: the trailing K-step grid it was trained on (use with KSamplerSelect 'ddim')."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="R0Scheduler", display_name="R0 Trailing Scheduler", category=CATEGORY + "/schedulers",
                      inputs=[Link("model", "MODEL"), Int("steps", 4, min=1, max=50)],
                      outputs=[Output("SIGMAS", "SIGMAS")])

    @classmethod
    def execute(cls, model: Any, steps: int) -> NodeOutput:
        from fewstep.nodes.core.schedules import from_timesteps
        from fewstep.nodes.r0.generator import trailing_timesteps

        return NodeOutput(from_timesteps(model.schedule, trailing_timesteps(steps)))


def _shipped() -> list[str]:
    from fewstep.nodes.r0.students import shipped_students

    return shipped_students()


class R0StudentLoader(Node):
    """A shipped R0 student of the built-in teacher: MODEL, CLIP, VAE + the SAMPLER, SIGMAS and CFG it samples with."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="R0StudentLoader", display_name="Load R0 Student", category=CATEGORY,
                      inputs=[Combo("student_name", _shipped, tooltip="fewstep/nodes/r0/weights: LoRA merged into the teacher")],
                      outputs=[Output("MODEL", "MODEL"), Output("CLIP", "CLIP"), Output("VAE", "VAE"),
                               Output("SAMPLER", "SAMPLER"), Output("SIGMAS", "SIGMAS"), Output("cfg", "FLOAT")])

    @classmethod
    def execute(cls, student_name: str) -> NodeOutput:
        from fewstep.nodes.r0.students import load_student_model

        model, clip, vae, meta = load_student_model(student_name)
        sampler, sigmas = sampler_outputs(model, len(meta["timesteps"]), float(meta["eta"]))
        return NodeOutput(model, clip, vae, sampler, sigmas, float(meta["guidance"]))


NODES: list[type[Node]] = [R0Train, R0Scheduler, R0StudentLoader]
