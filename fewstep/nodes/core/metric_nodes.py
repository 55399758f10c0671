"""Metric nodes: each outputs METRICS (a dict of named numbers shown in the editor)."""

from __future__ import annotations

from typing import Any

from fewstep.app.api import Int, Link, Node, NodeOutput, Output, Schema, String


def _prompts(text: str, n: int) -> list[str]:
    """One prompt per line; a single line applies to every image."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) == 1:
        return lines * n
    if len(lines) != n:
        raise ValueError(f"{len(lines)} prompt lines for {n} images (give one line, or one per image)")
    return lines


class FDEffNet(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="FDEffNet", display_name="FD-EffNet", category="fewstep/metrics",
                      description="Fréchet distance on EfficientNet-Lite0 features against real procedural renders.",
                      inputs=[Link("images", "IMAGE"), Int("reference_count", 256, min=2, max=100000),
                              Int("reference_seed", 0, min=0, max=2**31 - 1)],
                      outputs=[Output("METRICS", "METRICS")])

    @classmethod
    def execute(cls, images: Any, reference_count: int, reference_seed: int) -> NodeOutput:
        from fewstep.nodes.core.metrics import fd_effnet, reference_images

        reference, _ = reference_images(reference_count, reference_seed)
        value = fd_effnet(images, reference)
        return NodeOutput({"fd_effnet": value, "n_images": int(images.shape[0]), "n_reference": reference_count},
                          ui={"metrics": [{"fd_effnet": value}]})


class AttributeAlignment(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="AttributeAlignment", display_name="Exact Attribute Alignment",
                      category="fewstep/metrics",
                      description="Reads colour/shape/count of each object with the attribute probe.",
                      inputs=[Link("images", "IMAGE"), String("prompts", multiline=True)],
                      outputs=[Output("METRICS", "METRICS")])

    @classmethod
    def execute(cls, images: Any, prompts: str) -> NodeOutput:
        from fewstep.nodes.core.metrics import attribute_alignment

        result = attribute_alignment(images, _prompts(prompts, images.shape[0]))
        return NodeOutput(result, ui={"metrics": [result]})


class ScorerSimilarity(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ScorerSimilarity", display_name="Scorer Similarity", category="fewstep/metrics",
                      inputs=[Link("images", "IMAGE"), String("prompts", multiline=True)],
                      outputs=[Output("METRICS", "METRICS")])

    @classmethod
    def execute(cls, images: Any, prompts: str) -> NodeOutput:
        from fewstep.nodes.core.metrics import scorer_similarity

        value = scorer_similarity(images, _prompts(prompts, images.shape[0]))
        return NodeOutput({"scorer_similarity": value}, ui={"metrics": [{"scorer_similarity": value}]})


METRIC_NODES: tuple[type[Node], ...] = (FDEffNet, AttributeAlignment, ScorerSimilarity)
