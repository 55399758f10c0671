"""Efficient-vDiT nodes: tile-sparse attention on a VIDEO_MODEL, the per-layer mask search, the attention's
tile map, the MLCD and KD trainers, the few-step consistency sampler and the shipped students' loader. Each
returns a new VIDEO_MODEL (the input model is never changed: its DiT is copied)."""

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
from fewstep.nodes.core.video_nodes import video_sampler_output

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


def runner(model: Any, prompts: list[str], frames: int, steps: int, cfg: float, seed: int) -> Any:
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
        result = search_layer_masks(video_model.dit, runner(video_model, texts, frames, steps, cfg, seed), frames,
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

        maps = tile_attention_map(video_model.dit, runner(video_model, [prompt], frames, steps, cfg, seed))
        diagonal = maps.diagonal(dim1=-2, dim2=-1).mean(-1)          # [layers]: mass on a frame's own tile
        table = {"frames": frames, "uniform_diagonal": round(1 / frames, 4),
                 "layers": [{"layer": i, "diagonal_mass": round(float(d), 4)} for i, d in enumerate(diagonal)]}
        return NodeOutput(tile_maps_image(maps), table)


def _run_folder(run_name: str, parts: list[str]) -> Any:
    from fewstep.nodes.core.train.distill_graph import run_folder

    return run_folder(run_name, parts, kind="vdit")


def _optimisation(steps: int, batch: int, lr: float) -> list[Any]:
    return [Int("steps", steps, min=1, max=10_000_000), Int("batch_size", batch, min=1, max=4096),
            Float("learning_rate", lr, min=0.0, max=1.0, step=1e-6, round=1e-7)]


def _run_inputs(name: str) -> list[Any]:
    return [Int("pool_clips", 256, min=1, max=1_000_000, tooltip="training captions (train split) drawn from"),
            fixed_seed(),
            String("run_name", name, tooltip="checkpoints go to <models>/checkpoints/vdit/<run_name>-<hash>"),
            Int("checkpoint_every", 100, min=0, max=10_000_000)]


class VDiTMLCDTrain(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VDiTMLCDTrain", display_name="MLCD Train (Efficient-vDiT stage 1)", category=CATEGORY,
                      description="Multistep consistency distillation of the video model: the teacher's 50-step grid "
                                  "is cut into segments; a student jump to the segment start from t_m must match the "
                                  "EMA target's jump from t_n, one guided teacher step below (MLCM eq. 6). The "
                                  "teacher's CFG is distilled in (sample the student with CFG 1). Checkpoints into "
                                  "<models>/checkpoints/vdit; a re-run with the same settings resumes.",
                      inputs=[Link("video_model", VIDEO_MODEL, tooltip="the teacher"), *_optimisation(400, 8, 1e-4),
                              Int("segments", 10, min=1, max=100, tooltip="student steps (paper: a 5x cut)"),
                              Int("teacher_steps", 50, min=1, max=1000, tooltip="the teacher's grid (a multiple of segments)"),
                              Float("shift", 3.0, min=0.01, max=100.0, step=0.1),
                              Float("cfg", 4.0, min=1.0, max=30.0, step=0.1, tooltip="teacher CFG distilled in"),
                              Combo("target", ["ema", "online"], default="ema"),
                              Float("ema_decay", 0.95, min=0.0, max=0.99999, step=0.001),
                              Combo("state_source", ["teacher", "real"], default="teacher",
                                    tooltip="teacher: data-free states of the teacher's trajectories; real: noised "
                                            "rendered clips"),
                              *_run_inputs("vdit-mlcd")],
                      outputs=[Output("VIDEO_MODEL", VIDEO_MODEL)])

    @classmethod
    def execute(cls, video_model: Any, steps: int, batch_size: int, learning_rate: float, segments: int,
                teacher_steps: int, shift: float, cfg: float, target: str, ema_decay: float, state_source: str,
                pool_clips: int, seed: int, run_name: str, checkpoint_every: int) -> NodeOutput:
        from fewstep.nodes.core.train.loop import Checkpointer
        from fewstep.nodes.vdit.train import MLCDConfig, train_mlcd

        config = MLCDConfig(steps=steps, batch_size=batch_size, lr=learning_rate, segments=segments,
                            base_steps=teacher_steps, shift=shift, guidance=cfg, target=target, ema_decay=ema_decay,
                            state_source=state_source, pool_clips=pool_clips, seed=seed)
        folder = _run_folder(run_name, [config.fingerprint(), video_model.name])
        student, state = train_mlcd(video_model, config, checkpointer=Checkpointer(folder, every=checkpoint_every))
        return NodeOutput(student, ui={"loss": state.losses})


class VDiTKDTrain(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VDiTKDTrain", display_name="Sparse KD Train (Efficient-vDiT stage 3)", category=CATEGORY,
                      description="Trains the tile-sparse model (e.g. the mask search's output on the MLCD student) to "
                                  "match the dense MLCD student's outputs, plus every layer's self-attention output "
                                  "(attention distillation), on the states its few-step sampler visits.",
                      inputs=[Link("sparse_model", VIDEO_MODEL, tooltip="the sparse student (its masks are kept)"),
                              Link("dense_model", VIDEO_MODEL, tooltip="the dense MLCD student (the KD teacher)"),
                              *_optimisation(200, 8, 2e-5),
                              Float("attention_weight", 1.0, min=0.0, max=100.0, step=0.1,
                                    tooltip="weight of the per-layer attention-output term"),
                              Combo("state_source", ["student", "real"], default="student",
                                    tooltip="student: the dense student's sampling states; real: noised clips"),
                              *_run_inputs("vdit-kd")],
                      outputs=[Output("VIDEO_MODEL", VIDEO_MODEL)])

    @classmethod
    def execute(cls, sparse_model: Any, dense_model: Any, steps: int, batch_size: int, learning_rate: float,
                attention_weight: float, state_source: str, pool_clips: int, seed: int, run_name: str,
                checkpoint_every: int) -> NodeOutput:
        from fewstep.nodes.core.train.loop import Checkpointer
        from fewstep.nodes.vdit.train import KDConfig, train_kd

        info = dense_model.info
        config = KDConfig(steps=steps, batch_size=batch_size, lr=learning_rate, attention_weight=attention_weight,
                          state_source=state_source, pool_clips=pool_clips, seed=seed,
                          segments=int(info.get("segments", 10)), base_steps=int(info.get("base_steps", 50)),
                          shift=float(info.get("shift", 3.0)))
        masks = str(sparse_model.info.get("tile_masks"))
        folder = _run_folder(run_name, [config.fingerprint(), dense_model.name, masks])
        student, state = train_kd(sparse_model, dense_model, config, checkpointer=Checkpointer(folder, every=checkpoint_every))
        return NodeOutput(student, ui={"loss": state.losses})


class VDiTConsistencySampler(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VDiTConsistencySampler", display_name="Few-step Consistency Sampler (Efficient-vDiT)",
                      category=CATEGORY,
                      description="Samples an MLCD (or KD) student on its segment boundaries: at each boundary the "
                                  "student's x0, then a deterministic DDIM jump (multistep CM) or a fresh re-noise "
                                  "(LCM) to the next. Fewer steps than segments take evenly spaced boundaries.",
                      inputs=[Link("video_model", VIDEO_MODEL),
                              String("prompt", "a small red circle moving right", multiline=True),
                              Int("frames", 8, min=1, max=16),
                              Int("steps", 10, min=1, max=100, tooltip="at most the student's segments"),
                              Combo("mode", ["jump", "renoise"], default="jump"),
                              Float("cfg", 1.0, min=1.0, max=30.0, step=0.1,
                                    tooltip="1: the distilled guidance alone (MLCD students)"),
                              Int("seed", 0, min=0, max=2**64 - 1, control_after_generate=True)],
                      outputs=[Output("VIDEO", "VIDEO"), Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, video_model: Any, prompt: str, frames: int, steps: int, mode: str, cfg: float,
                seed: int) -> NodeOutput:
        from fewstep.nodes.vdit.sampling import consistency_video

        return video_sampler_output(steps, lambda progress: consistency_video(
            video_model, prompt, frames=frames, steps=steps, mode=mode, cfg=cfg, seed=seed, callback=progress))


def _students() -> list[str]:
    from fewstep.nodes.vdit.train import shipped_students

    return shipped_students()


class VDiTStudentLoader(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="VDiTStudentLoader", display_name="Load Efficient-vDiT Student", category=CATEGORY,
                      description="A shipped student of the built-in video model (MLCD dense, or KD tile-sparse with "
                                  "its searched per-layer masks); the VAE and text encoder come from the input model.",
                      inputs=[Link("video_model", VIDEO_MODEL, tooltip="the base model (VAE, text encoder)"),
                              Combo("student_name", _students, tooltip="fewstep/nodes/vdit/weights (model card: weights/README.md)"),
                              Combo("implementation", IMPLS, default="gathered")],
                      outputs=[Output("VIDEO_MODEL", VIDEO_MODEL)])

    @classmethod
    def execute(cls, video_model: Any, student_name: str, implementation: str) -> NodeOutput:
        from fewstep.nodes.vdit.train import load_student

        return NodeOutput(load_student(student_name, video_model, impl=implementation))


NODES: tuple[type[Node], ...] = (VDiTTileAttention, VDiTMaskSearch, VDiTAttentionMap, VDiTMLCDTrain, VDiTKDTrain,
                                 VDiTConsistencySampler, VDiTStudentLoader)
