"""DD nodes: the pair dataset, the trainer, the shipped-generator loader and the 1/2-step sampler.

A graph: ``LoadBuiltinARModel`` (fewstep-tiny-ar) → ``DDPairDataset`` → ``DDTrain`` → ``DDSampler`` → IMAGE, or
``DDGeneratorLoader`` → ``DDSampler`` for the shipped generator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fewstep.app.api import Combo, Float, Int, Link, Node, NodeOutput, Output, Schema, String
from fewstep.nodes.core.train.seeds import fixed_seed

if TYPE_CHECKING:  # the node list imports without torch
    from fewstep.nodes.core.ar.bundle import ARModelBundle
    from fewstep.nodes.core.text import TextEncoder
    from fewstep.nodes.dd.graph import DDBundle
    from fewstep.nodes.dd.pairs import PairStore

CATEGORY = "fewstep/autoregressive/distilled decoding"
LIST_PROMPTS = "a small red circle at the top left\na large blue square left of a small white cross"


class DDPairDataset(Node):
    """Noise → teacher tokens through DD's deterministic flow map, saved to disk (resumable)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="DDPairDataset", display_name="DD Pair Dataset (flow map)", category=CATEGORY,
            description="For each pair: Gaussian noise per token position, pushed through the flow-matching map of "
                        "the AR teacher's conditional at every position (closed-form velocity over the codebook), "
                        "giving the teacher's tokens as a deterministic function of the noise. Shards go to "
                        "<models>/checkpoints/dd_pairs/<name>-<hash>; a re-run with the same settings resumes.",
            inputs=[Link("ar_model", "AR_MODEL", tooltip="the AR teacher (fewstep-tiny-ar)"),
                    Link("clip", "CLIP", tooltip="the loader's CLIP (MiniLM): embeds the prompts"),
                    Combo("prompt_source", ["procedural", "list"], default="procedural"),
                    String("prompts", LIST_PROMPTS, multiline=True, tooltip="one prompt per line (list)"),
                    Int("prompt_count", 256, min=1, max=1_000_000, tooltip="procedural training captions"),
                    Int("pair_count", 4096, min=1, max=100_000_000, tooltip="pairs (paper's recipe: ~100k+)"),
                    Float("cfg", 3.0, min=1.0, max=20.0, step=0.1, tooltip="teacher CFG on the logits, distilled in"),
                    Int("flow_steps", 32, min=1, max=1000, tooltip="Euler steps of the flow per token"),
                    fixed_seed(tooltip="noise and prompt draws; part of the dataset's identity"),
                    String("name", "dd-pairs", tooltip="folder name under <models>/checkpoints/dd_pairs")],
            outputs=[Output("DD_PAIRS", "DD_PAIRS")])

    @classmethod
    def execute(cls, ar_model: ARModelBundle, clip: TextEncoder, prompt_source: str, prompts: str, prompt_count: int,
                pair_count: int, cfg: float, flow_steps: int, seed: int, name: str) -> NodeOutput:
        from fewstep.nodes.core.train.prompts import prompt_list
        from fewstep.nodes.dd.graph import make_pairs

        texts = prompt_list(prompt_source, prompts, prompt_count, seed)
        return NodeOutput(make_pairs(ar_model, clip, texts, count=pair_count, cfg=cfg, flow_steps=flow_steps,
                                     seed=seed, name=name))


class DDTrain(Node):
    """Trains the DD generator (a copy of the teacher) to map noise to the teacher's tokens in 1-2 passes."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="DDTrain", display_name="DD Train (distilled decoding)", category=CATEGORY,
            description="Cross-entropy on the teacher's tokens from X_t = [first t tokens, original noise after] "
                        "for t in the step set, plus the continuous head's codeword error and an optional "
                        "decoded-patch loss. Checkpoints into <models>/checkpoints/distill; a re-run resumes.",
            inputs=[Link("ar_model", "AR_MODEL", tooltip="the teacher the pairs came from"),
                    Link("pairs", "DD_PAIRS"),
                    Int("steps", 1000, min=1, max=10_000_000), Int("batch_size", 64, min=1, max=4096),
                    Float("learning_rate", 1e-3, min=0.0, max=1.0, step=1e-5, round=1e-6),
                    String("step_set", "0,24", tooltip="starts t of X_t: '0' one step, '0,24' one or two steps"),
                    Float("cont_weight", 0.1, min=0.0, max=100.0, step=0.01, tooltip="continuous-head loss weight"),
                    Float("patch_weight", 0.0, min=0.0, max=100.0, step=0.01,
                          tooltip="decoded-patch pixel loss weight (0 = off)"),
                    Float("ema_decay", 0.995, min=0.0, max=0.99999, step=0.001, tooltip="sampling weights' EMA"),
                    fixed_seed(),
                    String("run_name", "dd", tooltip="checkpoints: <models>/checkpoints/distill/<run_name>-<hash>"),
                    Int("checkpoint_every", 200, min=0, max=10_000_000)],
            outputs=[Output("DD_MODEL", "DD_MODEL")])

    @classmethod
    def execute(cls, ar_model: ARModelBundle, pairs: PairStore, steps: int, batch_size: int, learning_rate: float,
                step_set: str, cont_weight: float, patch_weight: float, ema_decay: float, seed: int, run_name: str,
                checkpoint_every: int) -> NodeOutput:
        from fewstep.nodes.dd.graph import train_generator
        from fewstep.nodes.dd.train import DDTrainConfig, parse_t_list

        cfg = DDTrainConfig(steps=steps, batch_size=batch_size, lr=learning_rate, warmup=min(50, steps // 10),
                            t_list=parse_t_list(step_set), cont_weight=cont_weight, patch_weight=patch_weight,
                            ema_decay=ema_decay, seed=seed)
        bundle, losses = train_generator(ar_model, pairs, cfg, run_name=run_name, checkpoint_every=checkpoint_every)
        return NodeOutput(bundle, ui={"loss": losses})


def _shipped() -> list[str]:
    from fewstep.nodes.dd.weights_io import shipped_generators

    return shipped_generators()


class DDGeneratorLoader(Node):
    """The shipped DD generator of the built-in AR model."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="DDGeneratorLoader", display_name="Load DD Generator", category=CATEGORY,
                      inputs=[Combo("generator_name", _shipped, tooltip="fewstep/nodes/dd/weights (model card beside)")],
                      outputs=[Output("DD_MODEL", "DD_MODEL")])

    @classmethod
    def execute(cls, generator_name: str) -> NodeOutput:
        from fewstep.nodes.dd.graph import load_bundle

        return NodeOutput(load_bundle(generator_name))


class DDSampler(Node):
    """One or two network passes from noise to all 64 tokens; optionally the teacher fills the middle."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="DDSampler", display_name="DD Sampler (1-2 steps)", category=CATEGORY,
            description="1 step: all tokens from noise. 2 steps: then again from the first t₁ tokens and the same "
                        "noise. With a teacher connected: one DD step, keep dd_prefix tokens, the teacher continues "
                        "the flow map to t₁, one DD step finishes (1 + (t₁ - dd_prefix) + 1 passes).",
            inputs=[Link("dd_model", "DD_MODEL"),
                    Link("positive", "CONDITIONING", tooltip="prompt encoded by the AR loader's CLIP"),
                    Int("batch_size", 4, min=1, max=1024),
                    Int("seed", 0, min=0, max=2**63 - 1, control_after_generate=True),
                    Int("steps", 1, min=1, max=2),
                    Combo("head", ["logits", "continuous"], tooltip="argmax token, or nearest codeword of the "
                                                                    "continuous head"),
                    Int("dd_prefix", 8, min=0, max=64, tooltip="teacher-involved: DD tokens kept before the teacher"),
                    Link("teacher", "AR_MODEL", optional=True, tooltip="connect for the teacher-involved mode")],
            outputs=[Output("IMAGE", "IMAGE"), Output("AR_TOKENS", "AR_TOKENS")])

    @classmethod
    def execute(cls, dd_model: DDBundle, positive: list, batch_size: int, seed: int, steps: int, head: str,
                dd_prefix: int, teacher: ARModelBundle | None = None) -> NodeOutput:
        from fewstep.nodes.core.ar.bundle import caption_condition
        from fewstep.nodes.dd.graph import sample

        gen = dd_model.generator
        cond = caption_condition(positive, batch_size, gen.config.teacher.cond_dim, gen.book.device)
        grid = sample(dd_model, cond, steps=steps, seed=seed, head=head, teacher=teacher, dd_prefix=dd_prefix)
        return NodeOutput(grid.decode(dd_model.tokenizer), grid)


NODES: tuple[type[Node], ...] = (DDPairDataset, DDTrain, DDGeneratorLoader, DDSampler)
