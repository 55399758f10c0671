"""The widgets every distillation trainer node shares, without torch: node modules import this at load time
(listing nodes stays fast); the training body is ``distill_graph.run_trainer``, imported when a node runs."""

from __future__ import annotations

from fewstep.app.api import Combo, Float, Input, Int, Link, String
from fewstep.nodes.core.train.seeds import fixed_seed

DEFAULT_PROMPTS = "a red circle\na blue square on the left\ntwo green triangles\na yellow star above a purple heart"

PASS_THROUGH = ("model", "clip", "prompt_source", "prompts", "prompt_count", "run_name", "checkpoint_every",
                "preview_every", "vae", "dataset")


def trainer_inputs(default_lr: float, default_target: str) -> list[Input]:
    """The inputs every distillation trainer shares (teacher, prompts, optimisation, checkpoints)."""
    return [
        Link("model", "MODEL", tooltip="the teacher"),
        Link("clip", "CLIP", tooltip="the teacher's text encoder"),
        Combo("prompt_source", ["procedural", "list", "dataset"], default="procedural",
              tooltip="procedural: captions of the built-in scene generator; list: the prompts below"),
        String("prompts", DEFAULT_PROMPTS, multiline=True, tooltip="one prompt per line (prompt_source = list)"),
        Int("prompt_count", 512, min=1, max=1_000_000, tooltip="procedural prompts to draw from"),
        Int("steps", 500, min=1, max=10_000_000), Int("batch_size", 32, min=1, max=4096),
        Float("learning_rate", default_lr, min=0.0, max=1.0, step=1e-6, round=1e-7),
        Float("cfg", 5.0, min=1.0, max=30.0, step=0.1, tooltip="teacher CFG scale distilled into the student"),
        Int("skip", 20, min=1, max=500, tooltip="teacher skip in timesteps (papers: 20)"),
        Float("huber_c", 0.001, min=0.0, max=1.0, step=1e-4, round=1e-5, tooltip="pseudo-Huber c"),
        Combo("target", ["online", "ema"], default=default_target, tooltip="stop-gradient student or EMA target"),
        Float("ema_decay", 0.95, min=0.0, max=0.99999, step=0.001),
        Combo("state_source", ["teacher", "real"], default="teacher",
              tooltip="teacher: data-free states from the teacher's trajectories; real: noised dataset latents"),
        Int("lora_rank", 0, min=0, max=256, tooltip="0 = full fine-tune, else LoRA rank (peft)"),
        fixed_seed(),
        String("run_name", "student", tooltip="checkpoints go to <models>/checkpoints/distill/<run_name>-<hash>"),
        Int("checkpoint_every", 100, min=0, max=10_000_000),
        Int("preview_every", 50, min=0, max=10_000_000),
        Link("vae", "VAE", optional=True, tooltip="decodes the live previews (and dataset images)"),
        Link("dataset", "DATASET", optional=True),
    ]


def common_fields(kw: dict[str, object]) -> dict[str, object]:
    """DistillConfig fields from the shared widget values."""
    return dict(steps=kw["steps"], batch_size=kw["batch_size"], lr=kw["learning_rate"], guidance=kw["cfg"],
                skip=kw["skip"], huber_c=kw["huber_c"], target=kw["target"], ema_decay=kw["ema_decay"],
                state_source=kw["state_source"], lora_rank=kw["lora_rank"], seed=kw["seed"])
