"""PSO nodes: the online (reward-ranked pairs) and offline (concept images) trainers, and the shipped adapter."""

from __future__ import annotations

from typing import Any

from fewstep.app.api import Combo, Float, Int, Link, Node, NodeOutput, Output, Schema, String
from fewstep.nodes.core.train.seeds import fixed_seed

DEFAULT_PROMPTS = "a large red circle above a large green cross\na small blue square on the left\ntwo large yellow diamonds"


def _common_inputs(default_lr: float, default_steps: int, default_batch: int) -> list[Any]:
    """Inputs both trainers share: the student and its encoders, optimisation, adapters, checkpoints."""
    return [
        Link("model", "MODEL", tooltip="the few-step student to tune (e.g. Load Few-step Student: MLCM)"),
        Link("clip", "CLIP", tooltip="the student's text encoder"),
        Link("vae", "VAE", tooltip="decodes samples for the reward (online) / encodes the targets (offline)"),
        Int("steps", default_steps, min=1, max=10_000_000),
        Int("batch_size", default_batch, min=1, max=4096,
            tooltip="online: prompts per step (two walks each); offline: (target, reference) pairs per step"),
        Float("learning_rate", default_lr, min=0.0, max=1.0, step=1e-6, round=1e-7),
        Int("sample_steps", 4, min=1, max=8, tooltip="the student's sampler steps (MLCM milestones, 8 segments)"),
        Int("lora_rank", 16, min=1, max=256, tooltip="LoRA rank of the PSO adapters on the frozen student"),
        Combo("method", ["pso", "naive"], default="pso",
              tooltip="pso: the pairwise objective; naive: the plain denoising-loss baseline on the same data"),
        fixed_seed(),
        String("run_name", "pso", tooltip="checkpoints go to <models>/checkpoints/pso/<run_name>-<hash>"),
        Int("checkpoint_every", 50, min=0, max=10_000_000),
    ]


def _config(kw: dict[str, Any], mode: str, **more: Any) -> Any:
    from fewstep.nodes.core.train.consistency import milestone_timesteps
    from fewstep.nodes.pso.train import PSOConfig

    mode = mode if kw["method"] == "pso" else f"naive_{mode}"
    return PSOConfig(mode=mode, steps=kw["steps"], batch_size=kw["batch_size"], lr=kw["learning_rate"],
                     seed=kw["seed"], lora_rank=kw["lora_rank"],
                     timesteps=tuple(milestone_timesteps(kw["sample_steps"], 8)), **more)


class PSOOnline(Node):
    """Online PSO: pairs of the student's own samples, ranked by a reward, pairwise clipped log-ratio loss."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="PSOOnline", display_name="PSO Online (reward-ranked pairs)", category="fewstep/finetune",
            description="Pairwise Sample Optimization (Miao et al. 2025): tunes LoRA adapters of a few-step student "
                        "so that its preferred samples become likelier than under the original student, keeping "
                        "its few-step sampler. Checkpoints every N steps; a re-run with the same settings resumes.",
            inputs=[*_common_inputs(3e-4, 200, 8),
                    Link("reward_model", "REWARD_MODEL", tooltip="ranks the two samples of each prompt"),
                    Combo("prompt_source", ["procedural", "list"], default="procedural",
                          tooltip="procedural: captions of the built-in scene generator; list: the prompts below"),
                    String("prompts", DEFAULT_PROMPTS, multiline=True, tooltip="one prompt per line"),
                    Int("prompt_count", 512, min=1, max=1_000_000, tooltip="procedural prompts to draw from"),
                    Float("beta", 50.0, min=1e-3, max=1e4, step=0.1, tooltip="β of the pairwise logistic (paper: 50)"),
                    Float("clip_epsilon", 0.1, min=1e-3, max=0.99, step=0.01,
                          tooltip="likelihood ratios to the reference are clamped to [1-ε, 1+ε] (paper: 0.1)")],
            outputs=[Output("MODEL", "MODEL")])

    @classmethod
    def execute(cls, **kw: Any) -> NodeOutput:
        from fewstep.nodes.core.train.prompts import prompt_list
        from fewstep.nodes.pso.graph_train import train_online

        cfg = _config(kw, "online", beta=kw["beta"], clip=kw["clip_epsilon"])
        prompts = prompt_list(kw["prompt_source"], kw["prompts"], kw["prompt_count"], kw["seed"])
        model, losses = train_online(kw["model"], kw["clip"], kw["vae"], kw["reward_model"], prompts, cfg,
                                     run_name=kw["run_name"], checkpoint_every=kw["checkpoint_every"])
        return NodeOutput(model, ui={"loss": losses})


class PSOOffline(Node):
    """Offline PSO (concept customization): target images vs the original student's own samples of the prompt."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="PSOOffline", display_name="PSO Offline (concept images)", category="fewstep/finetune",
            description="Pairwise Sample Optimization, offline: each target image is paired with a reference image "
                        "sampled once from the original student (same noise and timestep on the student's grid); "
                        "the adapters make the target's x0 error smaller than the reference's (hinge or DPO).",
            inputs=[*_common_inputs(2e-4, 200, 8),
                    Link("images", "IMAGE", tooltip="a few target images of the concept, at the student's resolution"),
                    String("prompt", "a small yellow circle left of a large purple cross",
                           tooltip="the concept's prompt (targets and references share it)"),
                    Combo("objective", ["hinge", "dpo"], default="hinge",
                          tooltip="hinge: reference-free relu(1 - β Δ) (the paper's scripts); dpo: with the reference"),
                    Float("beta", 5.0, min=1e-3, max=1e4, step=0.1, tooltip="β (paper's scripts: 5)"),
                    Float("prior_weight", 0.5, min=0.0, max=100.0, step=0.01,
                          tooltip="λ on the reference samples' own error (keeps the student's prior; paper: 0.5)"),
                    Int("num_negatives", 20, min=1, max=4096, tooltip="reference samples drawn once (paper: 20)")],
            outputs=[Output("MODEL", "MODEL")])

    @classmethod
    def execute(cls, **kw: Any) -> NodeOutput:
        from fewstep.nodes.pso.graph_train import train_offline

        cfg = _config(kw, "offline", beta_offline=kw["beta"], prior_weight=kw["prior_weight"],
                      objective=kw["objective"], num_negatives=kw["num_negatives"])
        model, losses = train_offline(kw["model"], kw["clip"], kw["vae"], kw["images"], kw["prompt"], cfg,
                                      run_name=kw["run_name"], checkpoint_every=kw["checkpoint_every"])
        return NodeOutput(model, ui={"loss": losses})


class ConceptImages(Node):
    """A few procedural renders of one held-out scene (the offline demo's concept) and its caption."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="PSOConceptImages", display_name="PSO Concept Images (procedural)",
                      category="fewstep/finetune",
                      description="Renders of the first held-out scene of a kind (index >= 300, outside the "
                                  "evaluation prompts), objects jittered in their cells: targets for PSO Offline.",
                      inputs=[Combo("kind", ["relation", "single", "count", "row"], default="relation"),
                              Int("count", 5, min=1, max=256), fixed_seed(max=2**31 - 1, tooltip="which jitter of the scene")],
                      outputs=[Output("IMAGE", "IMAGE"), Output("caption", "STRING")])

    @classmethod
    def execute(cls, kind: str, count: int, seed: int) -> NodeOutput:
        from fewstep.nodes.pso.concept import concept_images, concept_scene
        from fewstep.nodes.zoo import data

        scene = concept_scene(kind)
        return NodeOutput(concept_images(scene, count, seed), data.caption(scene))


def _shipped() -> list[str]:
    from fewstep.nodes.pso.students import shipped_adapters

    return shipped_adapters()


class PSOAdapterLoader(Node):
    """The shipped PSO adapters merged into their base student, as MODEL, CLIP, VAE."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="PSOAdapterLoader", display_name="Load PSO-tuned Student", category="fewstep/finetune",
                      inputs=[Combo("adapter_name", _shipped, tooltip="fewstep/nodes/pso/weights: LoRA on the MLCM student")],
                      outputs=[Output("MODEL", "MODEL"), Output("CLIP", "CLIP"), Output("VAE", "VAE")])

    @classmethod
    def execute(cls, adapter_name: str) -> NodeOutput:
        from fewstep.nodes.pso.students import load_adapter_model

        return NodeOutput(*load_adapter_model(adapter_name))


NODES: list[type[Node]] = [PSOOnline, PSOOffline, ConceptImages, PSOAdapterLoader]
