"""Efficient-vDiT nodes: tile-sparse attention on a VIDEO_MODEL, the per-layer mask search, the attention's
tile map. Each returns a new VIDEO_MODEL (the input model is never changed: its DiT is copied)."""

from __future__ import annotations

from typing import Any

from fewstep.app.api import (
    Combo,
    Float,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    Schema,
    String,
    check_interrupted,
)
from fewstep.nodes.core.train.seeds import fixed_seed

CATEGORY = "fewstep/video/efficient-vdit"
VIDEO_MODEL = "VIDEO_MODEL"
IMPLS = ["gathered", "flex", "reference"]


def parse_masks(text: str, layers: int) -> list[int | None]:
    """``"2"`` (every layer 2 reference frames), ``"2,2,1,dense"`` (one per layer) -> per-layer refs (None = dense)."""
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if len(items) not in (1, layers):
        raise ValueError(f"masks: give one value or one per layer ({layers}), got {len(items)}: {text!r}")
    values: list[int | None] = []
    for item in items:
        if item == "dense":
            values.append(None)
        elif item.isdigit():
            values.append(int(item))
        else:
            raise ValueError(f"masks: each value is a number of reference frames or 'dense', got {item!r}")
    return values * layers if len(values) == 1 else values


def _with_dit(model: Any, dit: Any, **info: Any) -> Any:
    import dataclasses

    return dataclasses.replace(model, dit=dit, info={**model.info, **info})


def _runner(model: Any, prompts: list[str], frames: int, steps: int, cfg: float, seed: int) -> Any:
    """run(dit) -> final latents of a few-step Euler sample of the prompts with ``dit`` in ``model``."""
    from fewstep.nodes.zoo.video.model import generate

    def run(dit: Any) -> Any:
        check_interrupted()
        return generate(_with_dit(model, dit), prompts, frames=frames, steps=steps, cfg=cfg, seed=seed)[1]
    return run


class VDiTTileAttention(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VDiTTileAttention", display_name="Tile-Sparse Attention (Efficient-vDiT)",
                      category=CATEGORY,
                      description="Makes the video DiT's self-attention tile-sparse: every frame attends to itself "
                                  "and to the first N frames, which attend to all (the paper's a:b masks, "
                                  "a = N). One number for every layer or one per layer ('dense' keeps a layer).",
                      inputs=[Link("video_model", VIDEO_MODEL),
                              String("masks", "2", tooltip="reference frames per layer: '2' or '2,1,dense,2'"),
                              Combo("implementation", IMPLS, default="gathered",
                                    tooltip="gathered: exact, only the kept tiles; flex: flex-attention block "
                                            "mask (the fused kernel on CUDA); reference: dense + mask")],
                      outputs=[Output("VIDEO_MODEL", VIDEO_MODEL)])

    @classmethod
    def execute(cls, video_model: Any, masks: str, implementation: str) -> NodeOutput:
        from fewstep.nodes.vdit.attention import with_layer_masks

        refs = parse_masks(masks, len(video_model.dit.blocks))
        sparse = with_layer_masks(video_model.dit, refs, implementation)
        return NodeOutput(_with_dit(video_model, sparse, tile_masks=refs))


class VDiTMaskSearch(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VDiTMaskSearch", display_name="Layer-wise Mask Search (Efficient-vDiT)",
                      category=CATEGORY,
                      description="For each layer alone, the sparsest tile mask whose sampled clips stay within the "
                                  "relative error tolerance r of the dense model (the paper's stage 2; r = 0.025, "
                                  "0.05, 0.1 in its tables). Outputs the sparse model and a per-layer table.",
                      inputs=[Link("video_model", VIDEO_MODEL),
                              String("prompts", "a small red circle moving right\na large blue square bouncing",
                                     multiline=True, tooltip="prompts of the probe clips, one per line"),
                              Float("tolerance", 0.05, min=0.0, max=10.0, step=0.005),
                              Int("frames", 8, min=2, max=16), Int("steps", 4, min=1, max=100,
                                                                   tooltip="Euler steps of each probe sample"),
                              Float("cfg", 4.0, min=1.0, max=30.0, step=0.1), fixed_seed(tooltip="noise seed of the probe clips"),
                              Combo("implementation", IMPLS, default="gathered")],
                      outputs=[Output("VIDEO_MODEL", VIDEO_MODEL), Output("table", "METRICS")])

    @classmethod
    def execute(cls, video_model: Any, prompts: str, tolerance: float, frames: int, steps: int, cfg: float,
                seed: int, implementation: str) -> NodeOutput:
        from fewstep.nodes.vdit.attention import search_layer_masks, with_layer_masks

        texts = [line.strip() for line in prompts.splitlines() if line.strip()]
        if not texts:
            raise ValueError("VDiTMaskSearch: give at least one prompt")
        result = search_layer_masks(video_model.dit, _runner(video_model, texts, frames, steps, cfg, seed), frames,
                                    tolerance)
        sparse = with_layer_masks(video_model.dit, result.refs, implementation)
        table = {"tolerance": tolerance, "frames": frames, "mean_sparsity": round(result.sparsity, 4),
                 "layers": [{"layer": i, "mask": "dense" if r is None else f"{r}:{frames - r}",
                             "relative_error": round(e, 5)} for i, (r, e) in enumerate(zip(result.refs, result.errors,
                                                                                         strict=True))]}
        return NodeOutput(_with_dit(video_model, sparse, tile_masks=list(result.refs)), table)


class VDiTAttentionMap(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VDiTAttentionMap", display_name="Attention Tile Map (Efficient-vDiT)",
                      category=CATEGORY,
                      description="Samples one clip and pictures, for every layer, how much attention each query "
                                  "frame (row) gives each key frame (column): the diagonal and temporal-decay "
                                  "structure Efficient-vDiT's masks rely on.",
                      inputs=[Link("video_model", VIDEO_MODEL),
                              String("prompt", "a small red circle moving right", multiline=True),
                              Int("frames", 8, min=2, max=16), Int("steps", 4, min=1, max=100),
                              Float("cfg", 4.0, min=1.0, max=30.0, step=0.1), fixed_seed(tooltip="noise seed of the probe clips")],
                      outputs=[Output("IMAGE", "IMAGE"), Output("table", "METRICS")])

    @classmethod
    def execute(cls, video_model: Any, prompt: str, frames: int, steps: int, cfg: float, seed: int) -> NodeOutput:
        from fewstep.nodes.vdit.attention import tile_attention_map
        from fewstep.nodes.vdit.picture import tile_maps_image

        maps = tile_attention_map(video_model.dit, _runner(video_model, [prompt], frames, steps, cfg, seed))
        diagonal = maps.diagonal(dim1=-2, dim2=-1).mean(-1)          # [layers]: mass on a frame's own tile
        table = {"frames": frames, "uniform_diagonal": round(1 / frames, 4),
                 "layers": [{"layer": i, "diagonal_mass": round(float(d), 4)} for i, d in enumerate(diagonal)]}
        return NodeOutput(tile_maps_image(maps), table)


NODES: tuple[type[Node], ...] = (VDiTTileAttention, VDiTMaskSearch, VDiTAttentionMap)
