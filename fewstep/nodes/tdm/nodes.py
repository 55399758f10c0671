"""TDM nodes: the distillation trainer, the student's step scheduler and the shipped-student loader; the same three
for the built-in video model (flow parameterisation)."""

from __future__ import annotations

from typing import Any

from fewstep.app.api import Boolean, Combo, Float, Int, Link, Node, NodeOutput, Output, Schema, String
from fewstep.nodes.core.train.seeds import fixed_seed
from fewstep.nodes.core.train.trainer_schema import DEFAULT_PROMPTS

CATEGORY = "fewstep/distill"


class TDMDistill(Node):
    """Trajectory distribution matching: a deterministic K-step student whose every intermediate state matches
    the teacher's marginal (TDM, arXiv 2503.06674). Data-free: prompts only."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="TDMDistill", display_name="TDM Distill (trajectory distribution matching)", category=CATEGORY,
            description="Distils a teacher into a deterministic few-step student with a fake-score network "
                        "(copy of the teacher) trained on the student's own trajectory. Checkpoints every N steps "
                        "into the models folder; a re-run with the same settings resumes. The template "
                        "graphs/tdm_distill.json is a CPU demo (steps 6, batch_size 4, prompt_count 64: under a "
                        "minute on 2 cores). The shipped TDM-unify student's recipe, on a GPU: batch_size 512, "
                        "learning_rate 0.0003, generator_lr_ratio 0.5, lora_rank 16, as many steps as time allows.",
            inputs=[
                Link("model", "MODEL", tooltip="the teacher (the real score)"),
                Link("clip", "CLIP", tooltip="the teacher's text encoder"),
                Combo("prompt_source", ["procedural", "list"], default="procedural",
                      tooltip="procedural: captions of the built-in scene generator; list: the prompts below"),
                String("prompts", DEFAULT_PROMPTS, multiline=True, tooltip="one prompt per line (prompt_source = list)"),
                Int("prompt_count", 512, min=1, max=1_000_000, tooltip="procedural prompts to draw from"),
                Int("steps", 500, min=1, max=10_000_000, tooltip="optimizer steps (one student + one fake update each)"),
                Int("batch_size", 32, min=1, max=4096),
                Float("learning_rate", 3e-4, min=0.0, max=1.0, step=1e-6, round=1e-7, tooltip="the fake score's lr"),
                Float("generator_lr_ratio", 0.5, min=1e-4, max=10.0, step=0.01, round=1e-4,
                      tooltip="student lr = learning_rate x this (paper code: 0.2 with full students)"),
                Float("cfg", 5.0, min=1.0, max=30.0, step=0.1, tooltip="CFG of the real score, distilled in"),
                Int("student_steps", 4, min=1, max=8, tooltip="K; with unify: the largest K"),
                Boolean("unify", True, tooltip="sampling-steps-aware: one student for 1..K steps (K is a condition)"),
                Int("total_steps", 900, min=100, max=1000, tooltip="T': the student starts at T'-1 (paper: 900)"),
                Float("huber_c", 0.001, min=0.0, max=1.0, step=1e-4, round=1e-5, tooltip="pseudo-Huber c"),
                Boolean("separate", True, tooltip="diffuse each state only inside its own step interval"),
                Int("lora_rank", 16, min=0, max=256, tooltip="student LoRA rank (0 = full fine-tune)"),
                Int("fake_lora_rank", 0, min=0, max=256, tooltip="fake score LoRA rank (0 = full copy)"),
                Float("ema_decay", 0.0, min=0.0, max=0.99999, step=0.001, tooltip="student EMA (0 = off)"),
                fixed_seed(),
                String("run_name", "tdm", tooltip="checkpoints go to <models>/checkpoints/distill/<run_name>-<hash>"),
                Int("checkpoint_every", 100, min=0, max=10_000_000),
                Int("preview_every", 50, min=0, max=10_000_000),
                Link("vae", "VAE", optional=True, tooltip="decodes the live previews"),
            ],
            outputs=[Output("MODEL", "MODEL")])

    @classmethod
    def execute(cls, **kw: Any) -> NodeOutput:
        from fewstep.nodes.core.train.prompts import prompt_list
        from fewstep.nodes.tdm.graph_train import train_tdm_student
        from fewstep.nodes.tdm.train import TDMConfig

        cfg = TDMConfig(steps=kw["steps"], batch_size=kw["batch_size"], lr=kw["learning_rate"],
                        generator_lr_ratio=kw["generator_lr_ratio"], guidance=kw["cfg"],
                        student_steps=kw["student_steps"], unify=kw["unify"], total_steps=kw["total_steps"],
                        huber_c=kw["huber_c"], separate=kw["separate"], lora_rank=kw["lora_rank"],
                        fake_lora_rank=kw["fake_lora_rank"], ema_decay=kw["ema_decay"], seed=kw["seed"])
        texts = prompt_list(kw["prompt_source"], kw["prompts"], kw["prompt_count"], cfg.seed)
        student, losses = train_tdm_student(kw["model"], kw["clip"], cfg, prompts=texts, run_name=kw["run_name"],
                                            checkpoint_every=kw["checkpoint_every"], vae=kw.get("vae"),
                                            preview_every=kw["preview_every"])
        return NodeOutput(student, ui={"loss": losses})


class TDMScheduler(Node):
    """The K-step TDM student schedule (t_k = k·T'/K − 1) and the student set up for K steps.

    Sample with ``KSamplerSelect("ddim")`` (deterministic, the student's own ε̂) + ``BasicGuider``."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="TDMScheduler", display_name="TDM Student Scheduler", category=CATEGORY + "/schedulers",
                      description="SIGMAS of a K-step TDM run and the MODEL for K steps (a TDM-unify student gets "
                                  "K as its condition; other models pass through).",
                      inputs=[Link("model", "MODEL"), Int("steps", 4, min=1, max=8),
                              Int("total_steps", 900, min=100, max=1000, tooltip="T' of the student (900)")],
                      outputs=[Output("MODEL", "MODEL"), Output("SIGMAS", "SIGMAS")])

    @classmethod
    def execute(cls, model: Any, steps: int, total_steps: int) -> NodeOutput:
        from fewstep.nodes.core.schedules import from_timesteps
        from fewstep.nodes.tdm.graph_train import with_steps
        from fewstep.nodes.tdm.loss import student_timesteps

        return NodeOutput(with_steps(model, steps), from_timesteps(model.schedule, student_timesteps(steps, total_steps)))


def _shipped() -> list[str]:
    from fewstep.nodes.tdm.students import shipped_students

    return shipped_students()


class TDMStudentLoader(Node):
    """The shipped TDM students of the built-in teacher as MODEL, CLIP, VAE."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="TDMStudentLoader", display_name="Load TDM Student", category=CATEGORY,
                      inputs=[Combo("student_name", _shipped,
                                    tooltip="fewstep/nodes/tdm/weights: LoRA students merged into the built-in teacher")],
                      outputs=[Output("MODEL", "MODEL"), Output("CLIP", "CLIP"), Output("VAE", "VAE")])

    @classmethod
    def execute(cls, student_name: str) -> NodeOutput:
        from fewstep.nodes.tdm.graph_train import load_student_model

        return NodeOutput(*load_student_model(student_name))


VIDEO_MODEL = "VIDEO_MODEL"


class TDMVideoDistill(Node):
    """TDM on the built-in video model (rectified flow): a deterministic K-step video student whose every
    intermediate state matches the teacher's marginal. Data-free: captions only."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="TDMVideoDistill", display_name="TDM Distill (video)", category=CATEGORY,
            description="Distils a VIDEO_MODEL (the built-in flow DiT) into a deterministic K-step student with a "
                        "fake-score DiT trained on the student's own trajectory (TDM with the flow "
                        "parameterisation). Checkpoints every N steps into the models folder; a re-run with the "
                        "same settings resumes. graphs/tdm_video.json is a CPU demo of 20 steps; the shipped "
                        "students' recipe is these defaults, stopped after 5 minutes on 2 CPU cores (about 460 steps; "
                        "`python -m fewstep.bench.tdm.video_students`).",
            inputs=[
                Link("video_model", VIDEO_MODEL, tooltip="the teacher (the real score), e.g. the built-in video DiT"),
                Combo("prompt_source", ["captions", "list"], default="captions",
                      tooltip="captions: the built-in clips' training captions; list: the prompts below"),
                String("prompts", "a small red circle moving right\na large blue square bouncing", multiline=True,
                       tooltip="one prompt per line (prompt_source = list)"),
                Int("steps", 500, min=1, max=10_000_000, tooltip="optimizer steps (one student + one fake update each)"),
                Int("batch_size", 16, min=1, max=4096, tooltip="clips per step"),
                Float("learning_rate", 5e-4, min=0.0, max=1.0, step=1e-6, round=1e-7, tooltip="the fake score's lr"),
                Float("generator_lr_ratio", 0.2, min=1e-4, max=10.0, step=0.01, round=1e-4,
                      tooltip="student lr = learning_rate x this (paper code: 0.2)"),
                Float("cfg", 4.0, min=1.0, max=30.0, step=0.1, tooltip="CFG of the real score, distilled in"),
                Int("student_steps", 4, min=1, max=8, tooltip="K: the student's sampling steps"),
                Float("shift", 3.0, min=0.1, max=20.0, step=0.1,
                      tooltip="the student's noise levels are shift(k/K), k = K..1 (3: the teacher's schedule)"),
                Float("huber_c", 0.001, min=0.0, max=1.0, step=1e-4, round=1e-5, tooltip="pseudo-Huber c"),
                Boolean("separate", True, tooltip="diffuse each state only inside its own step interval"),
                Int("frames", 8, min=1, max=16, tooltip="clip length of the training states"),
                Float("ema_decay", 0.0, min=0.0, max=0.99999, step=0.001, tooltip="student EMA (0 = off)"),
                fixed_seed(),
                String("run_name", "tdm_video",
                       tooltip="checkpoints go to <models>/checkpoints/distill/<run_name>-<hash>"),
                Int("checkpoint_every", 100, min=0, max=10_000_000),
                Int("preview_every", 50, min=0, max=10_000_000),
            ],
            outputs=[Output("VIDEO_MODEL", VIDEO_MODEL)])

    @classmethod
    def execute(cls, **kw: Any) -> NodeOutput:
        from fewstep.nodes.tdm.video import TDMVideoConfig
        from fewstep.nodes.tdm.video_graph import train_tdm_video_student, video_prompts

        cfg = TDMVideoConfig(steps=kw["steps"], batch_size=kw["batch_size"], lr=kw["learning_rate"],
                             generator_lr_ratio=kw["generator_lr_ratio"], guidance=kw["cfg"],
                             student_steps=kw["student_steps"], shift=kw["shift"], huber_c=kw["huber_c"],
                             separate=kw["separate"], frames=kw["frames"], ema_decay=kw["ema_decay"], seed=kw["seed"])
        student, losses = train_tdm_video_student(kw["video_model"], cfg,
                                                  prompts=video_prompts(kw["prompt_source"], kw["prompts"]),
                                                  run_name=kw["run_name"], checkpoint_every=kw["checkpoint_every"],
                                                  preview_every=kw["preview_every"])
        return NodeOutput(student, ui={"loss": losses})


class TDMVideoSample(Node):
    """One clip from a TDM video student: Euler on the student's own noise levels, no CFG."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="TDMVideoSample", display_name="TDM Video Student Sampler", category="sampling/video",
                      description="Samples a clip with a TDM video student in its own K steps (sigma = shift(k/K), "
                                  "deterministic Euler = DDIM on its own noise estimate; CFG is distilled in).",
                      inputs=[Link("video_model", VIDEO_MODEL, tooltip="a TDM video student (TDM Distill (video) or "
                                                                       "Load TDM Video Student)"),
                              String("prompt", "a small red circle moving right", multiline=True),
                              Int("frames", 8, min=1, max=16, tooltip="clip length (the built-in model: 8)"),
                              Int("seed", 0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True)],
                      outputs=[Output("VIDEO", "VIDEO"), Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, video_model: Any, prompt: str, frames: int, seed: int) -> NodeOutput:
        from fewstep.nodes.core.video_nodes import video_sampler_output
        from fewstep.nodes.tdm.video import student_schedule
        from fewstep.nodes.tdm.video_graph import sample_student

        return video_sampler_output(student_schedule(video_model)[0], lambda progress: sample_student(
            video_model, prompt, frames=frames, seed=seed, callback=progress))


def _shipped_video() -> list[str]:
    from fewstep.nodes.tdm.video_graph import shipped_video_students

    return shipped_video_students()


class TDMVideoStudentLoader(Node):
    """A shipped TDM student of the built-in video model around the given teacher's VAE and text encoder."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="TDMVideoStudentLoader", display_name="Load TDM Video Student", category=CATEGORY,
                      inputs=[Link("video_model", VIDEO_MODEL, tooltip="the built-in video model (its teacher)"),
                              Combo("student_name", _shipped_video,
                                    tooltip="fewstep/nodes/tdm/weights: students of the built-in video DiT")],
                      outputs=[Output("VIDEO_MODEL", VIDEO_MODEL)])

    @classmethod
    def execute(cls, video_model: Any, student_name: str) -> NodeOutput:
        from fewstep.nodes.tdm.video_graph import load_shipped_video_student

        return NodeOutput(load_shipped_video_student(student_name, video_model))


NODES: list[type[Node]] = [TDMDistill, TDMScheduler, TDMStudentLoader, TDMVideoDistill, TDMVideoSample,
                           TDMVideoStudentLoader]
