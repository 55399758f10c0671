"""PRD nodes: the shipped generator's loader, the PRD trainer, text → triplane, triplane → mesh.

A graph: ``PRDLoadTeacher`` (the zoo's multi-view teacher loader) → ``PRDLoadGenerator`` (or ``PRDDistill``)
→ ``PRDTextToTriplane`` → ``PRDTriplaneToMesh`` → ``SaveGLB`` / ``Preview3D`` (export pack, by links).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fewstep.app.api import Combo, Float, Int, Link, Node, NodeOutput, Output, Schema, String
from fewstep.nodes.core.train.seeds import fixed_seed
from fewstep.nodes.zoo.multiview.nodes import MULTIVIEW_TEACHER

if TYPE_CHECKING:  # the node list imports without torch
    from fewstep.nodes.core.render.triplane import Triplane
    from fewstep.nodes.prd.graph import PRDGenerator
    from fewstep.nodes.zoo.multiview.builtin import MultiviewTeacher

CATEGORY = "fewstep/3d/prd"
TEACHER = MULTIVIEW_TEACHER  # the zoo's MultiviewTeacher (loader: PRDLoadTeacher): teacher + caption embedder
GENERATOR = "PRD_GENERATOR"  # fewstep.nodes.prd.graph.PRDGenerator: K-step text → triplane generator
LIST_CAPTIONS = "a red cube\na blue sphere\na yellow cone\na green cylinder"


class PRDLoadGenerator(Node):
    """The shipped triplane generator (PRD K = 4, plane-specific LoRA) on the teacher's UNet."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="PRDLoadGenerator", display_name="PRD Load Triplane Generator", category=CATEGORY,
            description="The shipped generator distilled from the teacher by Progressive Rendering Distillation: "
                        "its LoRA adapters, plane head and SDF/RGB decoder on a copy of the teacher's UNet.",
            inputs=[Link("teacher", TEACHER, tooltip="the teacher it was distilled from (its UNet is the base)")],
            outputs=[Output("generator", GENERATOR)])

    @classmethod
    def execute(cls, teacher: MultiviewTeacher) -> NodeOutput:
        from fewstep.nodes.prd.graph import load_generator_bundle

        return NodeOutput(load_generator_bundle(teacher))


class PRDDistill(Node):
    """Progressive Rendering Distillation: trains a K-step text → triplane generator from the teacher."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="PRDDistill", display_name="PRD Distill (text → triplane)", category=CATEGORY,
            description="From pure noise, K denoising steps; at each the generator's x̂0 becomes a triplane, four "
                        "views are volume-rendered and scored by the teacher (ASD, dmd weighting), backward per "
                        "step, then x̂0 (detached) is re-noised to the next step. Checkpoints go to "
                        "<models>/checkpoints/prd/<run_name>-<hash>; a re-run resumes.",
            inputs=[Link("teacher", TEACHER),
                    Combo("caption_source", ["procedural", "list"], default="procedural",
                          tooltip="procedural: the 24 captions of the teacher's objects; list: the lines below"),
                    String("captions", LIST_CAPTIONS, multiline=True, tooltip="one caption per line (list)"),
                    Int("k", 4, min=1, max=8, tooltip="PRD steps (timesteps 999, 749, 499, 249 for K = 4)"),
                    Combo("lora", ["plane-specific", "shared"], default="plane-specific",
                          tooltip="PETA: one LoRA per plane on the self-attention (plane-specific) or one for all"),
                    Int("lora_rank", 8, min=1, max=64),
                    Int("steps", 100, min=1, max=10_000_000), Int("batch_size", 2, min=1, max=256),
                    Float("learning_rate", 3e-3, min=0.0, max=1.0, step=1e-5, round=1e-6),
                    Int("views", 4, min=1, max=16, tooltip="renders per object and step"),
                    Float("cfg", 3.0, min=1.0, max=50.0, step=0.5, tooltip="teacher CFG in ASD"),
                    fixed_seed(),
                    String("run_name", "prd", tooltip="checkpoints: <models>/checkpoints/prd/<run_name>-<hash>"),
                    Int("checkpoint_every", 50, min=0, max=10_000_000),
                    Int("preview_every", 10, min=0, max=10_000_000)],
            outputs=[Output("generator", GENERATOR)])

    @classmethod
    def execute(cls, teacher: MultiviewTeacher, caption_source: str, captions: str, k: int, lora: str,
                lora_rank: int, steps: int, batch_size: int, learning_rate: float, views: int, cfg: float, seed: int,
                run_name: str, checkpoint_every: int, preview_every: int) -> NodeOutput:
        from fewstep.nodes.core.threads import tiny_cpu_work
        from fewstep.nodes.prd.graph import caption_list, distill
        from fewstep.nodes.prd.train import PRDConfig

        config = PRDConfig(k=k, steps=steps, batch=batch_size, lr=learning_rate, seed=seed, views=views, cfg=cfg,
                           lora=lora, rank=lora_rank)
        with tiny_cpu_work("cpu", 0):
            bundle, losses = distill(teacher, caption_list(caption_source, captions), config, run_name,
                                     checkpoint_every, preview_every)
        return NodeOutput(bundle, ui={"loss": losses})


class PRDTextToTriplane(Node):
    """Caption → K deterministic generator steps → triplane (+ four rendered views)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="PRDTextToTriplane", display_name="PRD Text to Triplane", category=CATEGORY,
            description="DDIM (η = 0) over the PRD timesteps without CFG, as the paper samples; the last x̂0 is "
                        "decoded into a triplane. IMAGE: four views 90° apart, volume-rendered.",
            inputs=[Link("generator", GENERATOR), String("text", "a red cube", tooltip="a caption"),
                    Int("k", 4, min=1, max=8, tooltip="steps (the generator's own K is what it was trained for)"),
                    Int("seed", 0, min=0, max=2**31 - 1, control_after_generate=True),
                    Int("preview_size", 64, min=16, max=256, step=8, tooltip="side of each rendered view")],
            outputs=[Output("TRIPLANE", "TRIPLANE"), Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, generator: PRDGenerator, text: str, k: int, seed: int, preview_size: int) -> NodeOutput:
        from fewstep.nodes.core.threads import tiny_cpu_work
        from fewstep.nodes.prd.graph import text_to_triplane, views_image

        with tiny_cpu_work("cpu", 0):
            triplane = text_to_triplane(generator, text, k, seed)
            image = views_image(triplane, preview_size)
        return NodeOutput(triplane, image)


class PRDTriplaneToMesh(Node):
    """Marching cubes of a triplane's SDF, vertex colours from its decoder."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="PRDTriplaneToMesh", display_name="PRD Triplane to Mesh", category=CATEGORY,
            description="Evaluates the SDF on a resolution³ grid over the triplane's cube, extracts the zero level "
                        "set (marching cubes, closed at the border) and colours each vertex by the RGB decoder. "
                        "METRICS: non_empty, watertight, inside (not clipped by the cube), vertices, faces.",
            inputs=[Link("triplane", "TRIPLANE"),
                    Int("resolution", 48, min=8, max=256, tooltip="grid points per axis")],
            outputs=[Output("MESH", "MESH"), Output("METRICS", "METRICS")])

    @classmethod
    def execute(cls, triplane: Triplane, resolution: int) -> NodeOutput:
        from fewstep.nodes.prd.evaluate import mesh_validity, triplane_mesh

        mesh = triplane_mesh(triplane, resolution)
        metrics = {k: float(v) for k, v in mesh_validity(triplane, resolution).items()}
        metrics |= {"vertices": float(mesh.num_vertices), "faces": float(mesh.num_faces)}
        return NodeOutput(mesh, metrics, ui={"metrics": [metrics]})


NODES: tuple[type[Node], ...] = (PRDLoadGenerator, PRDDistill, PRDTextToTriplane, PRDTriplaneToMesh)
