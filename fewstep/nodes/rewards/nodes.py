"""Reward nodes: each outputs a REWARD_MODEL (a differentiable ``reward(IMAGE, prompts) -> [B]``), a combine
node for weighted sums, and ``RewardScore`` to measure a reward on an IMAGE batch (METRICS)."""

from __future__ import annotations

from typing import Any

from fewstep.app.api import Boolean, Float, Link, Node, NodeOutput, Output, Schema, String

CATEGORY = "fewstep/rewards"
SLOTS = 4


class ScorerRewardNode(Node):
    """The zoo image-text scorer's cosine similarity as a reward (a CLIP-score analogue)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ScorerReward", display_name="Scorer Reward (image-text cosine)", category=CATEGORY,
                      description="Cosine similarity in -1..1 of the built-in scorer's image and prompt embeddings.",
                      outputs=[Output("REWARD_MODEL", "REWARD_MODEL")])

    @classmethod
    def execute(cls) -> NodeOutput:
        from fewstep.nodes.core.rewards import ScorerReward

        return NodeOutput(ScorerReward())


class ProbeRewardNode(Node):
    """Log-probability of the prompt's scene under the zoo attribute probe."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ProbeReward", display_name="Attribute Probe Reward (log-prob)", category=CATEGORY,
                      description="log p(colour, shape, size of each captioned object | image) per grid cell, "
                                  "<= 0; prompts must follow the procedural caption grammar.",
                      outputs=[Output("REWARD_MODEL", "REWARD_MODEL")])

    @classmethod
    def execute(cls) -> NodeOutput:
        from fewstep.nodes.core.rewards import ProbeReward

        return NodeOutput(ProbeReward())


class SaturationRewardNode(Node):
    """Rule-based 'more saturated is better' (hackable on purpose)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SaturationReward", display_name="Saturation Reward (rule-based)", category=CATEGORY,
                      description="Mean HSV saturation in 0..1; maximising it alone colours the background "
                                  "(reward hacking).",
                      inputs=[Float("eps", 0.01, min=1e-6, max=1.0, step=0.001, round=1e-6,
                                    tooltip="added to max(r,g,b): keeps dark pixels' gradient finite")],
                      outputs=[Output("REWARD_MODEL", "REWARD_MODEL")])

    @classmethod
    def execute(cls, eps: float) -> NodeOutput:
        from fewstep.nodes.core.rewards import SaturationReward

        return NodeOutput(SaturationReward(eps))


class CombineRewards(Node):
    """Σ_j w_j R_j of up to four rewards, optionally with per-reward gradient normalisation (R0)."""

    @classmethod
    def define_schema(cls) -> Schema:
        inputs: list[Any] = []
        for i in range(1, SLOTS + 1):
            inputs += [Link(f"reward_{i}", "REWARD_MODEL", optional=i > 1),
                       Float(f"weight_{i}", 1.0, min=-100.0, max=100.0, step=0.01, round=1e-4, optional=i > 1)]
        inputs.append(Boolean("normalize_grads", True, tooltip="trainers scale each reward's per-image gradient "
                                                               "to unit norm before weighting (R0)"))
        return Schema(node_id="CombineRewards", display_name="Combine Rewards (weighted)", category=CATEGORY,
                      inputs=inputs, outputs=[Output("REWARD_MODEL", "REWARD_MODEL")])

    @classmethod
    def execute(cls, normalize_grads: bool, **kw: Any) -> NodeOutput:
        from fewstep.nodes.core.rewards import Term, WeightedRewards

        terms = [Term(f"{i}:{type(kw[f'reward_{i}']).__name__}", kw[f"reward_{i}"], float(kw.get(f"weight_{i}", 1.0)))
                 for i in range(1, SLOTS + 1) if kw.get(f"reward_{i}") is not None]
        return NodeOutput(WeightedRewards(terms, normalize_grads=normalize_grads))


def prompt_lines(text: str, n: int, where: str) -> list[str]:
    """One prompt per line; a single line applies to all ``n`` images."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1:
        return lines * n
    if len(lines) != n:
        raise ValueError(f"{where}: {len(lines)} prompt lines for {n} images (give one line, or one per image)")
    return lines


class RewardScore(Node):
    """Mean (and spread) of a reward over an IMAGE batch; per-term means for a combined reward."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="RewardScore", display_name="Reward Score", category=CATEGORY,
                      inputs=[Link("images", "IMAGE"), Link("reward", "REWARD_MODEL"),
                              String("prompts", "a small red circle at the top left", multiline=True,
                                     tooltip="one line for all images, or one line per image")],
                      outputs=[Output("METRICS", "METRICS")], is_output_node=True)

    @classmethod
    def execute(cls, images: Any, reward: Any, prompts: str) -> NodeOutput:
        from fewstep.nodes.core.rewards import reward_metrics

        metrics = reward_metrics(reward, images, prompt_lines(prompts, images.shape[0], "RewardScore"))
        return NodeOutput(metrics, ui={"metrics": [metrics]})


NODES: list[type[Node]] = [ScorerRewardNode, ProbeRewardNode, SaturationRewardNode, CombineRewards, RewardScore]
