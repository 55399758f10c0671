"""ATOP nodes: a procedural articulated object, its motion evidence (clips from known cameras), a video model
personalised on a category's motion (stage A), and the articulation fit (joint type, axis, origin, range) by
differentiable rendering with photometric and / or score-distillation guidance; the fitted MESH goes to SaveGLB
with the joint as a node animation."""

from __future__ import annotations

from typing import Any

from fewstep.app.api import Combo, Float, Int, Link, Node, NodeOutput, Output, Schema, String, report_progress

CATEGORY = "fewstep/3d/atop"
EVIDENCE = "MOTION_EVIDENCE"   # fewstep.nodes.atop.evidence.MotionEvidence: clips [V,T,H,W,3], masks, cameras
OBJECT_KINDS = ["box_lid", "drawer", "door"]
PRIOR = "ATOP_MOTION_PRIOR"    # fewstep.nodes.atop.motion.MotionPrior: personalised video DiT + VAE + caption
GUIDANCE = ["photometric", "sds", "both"]
JOINT_CHOICES = {"both": ("revolute", "prismatic"), "revolute": ("revolute",), "prismatic": ("prismatic",)}


class ATOPArticulatedObject(Node):
    """A procedural articulated object with a known joint (the ground truth the fit is scored against)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="ATOPArticulatedObject", display_name="ATOP Articulated Object", category=CATEGORY,
            description="A box with a hinged lid, a cabinet with a drawer or a cabinet with a door: two parts and "
                        "one joint (type, axis, origin, range). Size, colours and a yaw come from the seed.",
            inputs=[Combo("object", OBJECT_KINDS, default="box_lid"),
                    Int("seed", 0, min=0, max=2**31 - 1, tooltip="sizes, colours and the yaw of the object"),
                    Float("max_yaw", 30.0, min=0.0, max=180.0, step=1.0, tooltip="degrees; the yaw is uniform in ±max_yaw")],
            outputs=[Output("MESH", "MESH"), Output("part", "STRING", tooltip="the moving part's name")])

    @classmethod
    def execute(cls, object: str, seed: int, max_yaw: float) -> NodeOutput:
        from fewstep.nodes.atop.objects import make_object

        mesh = make_object(object, seed, max_yaw)
        return NodeOutput(mesh, mesh.joints[0].child)


class ATOPMotionEvidence(Node):
    """Clips of an articulated mesh moving through its first joint's range, from several known cameras."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="ATOPMotionEvidence", display_name="ATOP Motion Evidence", category=CATEGORY,
            description="Renders the mesh's first joint sweeping its range (frames evenly from lower to upper limit) "
                        "from cameras spread around its front. IMAGE: every frame, view-major; VIDEO: the views "
                        "side by side per frame.",
            inputs=[Link("mesh", "MESH", tooltip="an articulated mesh with a joint (e.g. ATOP Articulated Object)"),
                    Int("views", 3, min=1, max=16), Int("frames", 4, min=2, max=64),
                    Int("size", 48, min=16, max=512, step=8, tooltip="image side in pixels"),
                    Float("spread", 120.0, min=0.0, max=360.0, step=5.0, tooltip="azimuth range of the views, degrees"),
                    Float("elevation", 30.0, min=-89.0, max=89.0, step=1.0),
                    Float("distance", 2.8, min=0.5, max=100.0, step=0.1),
                    Float("fov", 40.0, min=5.0, max=150.0, step=1.0), Float("fps", 4.0, min=0.1, max=120.0, step=0.5)],
            outputs=[Output("evidence", EVIDENCE), Output("IMAGE", "IMAGE"), Output("VIDEO", "VIDEO")])

    @classmethod
    def execute(cls, mesh: Any, views: int, frames: int, size: int, spread: float, elevation: float,
                distance: float, fov: float, fps: float) -> NodeOutput:
        from fewstep.nodes.atop.evidence import EvidenceConfig, render_evidence
        from fewstep.nodes.core.mesh import ArticulatedMesh
        from fewstep.nodes.core.threads import tiny_cpu_work
        from fewstep.nodes.core.video import Video

        if not isinstance(mesh, ArticulatedMesh):
            raise ValueError(f"ATOP Motion Evidence needs an articulated MESH with a joint, got {type(mesh).__name__}")
        with tiny_cpu_work("cpu", 0):
            evidence = render_evidence(mesh, EvidenceConfig(views, frames, size, spread, elevation, distance, fov))
        tiled = evidence.frames.permute(1, 2, 0, 3, 4).reshape(frames, size, views * size, 3)   # [T, H, V W, 3]
        return NodeOutput(evidence, evidence.image_batch(), Video(tiled.contiguous(), fps))


class ATOPPersonaliseMotion(Node):
    """Stage A: LoRA fine-tune of the built-in video DiT on a few motion clips of one object category."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="ATOPPersonaliseMotion", display_name="ATOP Personalise Motion", category=CATEGORY,
            description="Fine-tunes LoRA adapters of a copy of the video DiT (flow-matching loss) on motion clips of "
                        "the category (its objects of seeds 100, 101, ..., rendered at 64 px from the evidence "
                        "cameras) with a caption carrying a motion token. Resumes from the run folder.",
            inputs=[Combo("category", OBJECT_KINDS, default="box_lid"),
                    String("caption", "", tooltip="empty: '[V] lid opening', '[V] drawer sliding out' or "
                                                  "'[V] door swinging open'"),
                    Int("objects", 4, min=1, max=64, tooltip="training objects (seeds 100, 101, ...)"),
                    Int("views", 3, min=1, max=16), Int("frames", 4, min=2, max=8),
                    Int("steps", 800, min=1, max=100_000), Int("rank", 8, min=1, max=64),
                    Float("learning_rate", 2e-3, min=1e-6, max=1.0, step=1e-4, round=1e-6),
                    Int("seed", 0, min=0, max=2**31 - 1),
                    String("run_name", "", tooltip="empty: no checkpoints; else resumes models/checkpoints/atop/<run>"),
                    Link("video_model", "VIDEO_MODEL", optional=True, tooltip="default: the built-in video model")],
            outputs=[Output("prior", PRIOR), Output("METRICS", "METRICS")])

    @classmethod
    def execute(cls, category: str, caption: str, objects: int, views: int, frames: int, steps: int, rank: int,
                learning_rate: float, seed: int, run_name: str, video_model: Any = None) -> NodeOutput:
        from fewstep.nodes.atop.motion import CAPTIONS, PersonaliseConfig, category_clips, personalise
        from fewstep.nodes.core.threads import tiny_cpu_work

        config = PersonaliseConfig(seeds=tuple(range(100, 100 + objects)), views=views, frames=frames, rank=rank,
                                   steps=steps, lr=learning_rate, seed=seed)
        caption = caption.strip() or CAPTIONS[category]
        if video_model is None:
            from fewstep.nodes.zoo.video.model import load_video_model

            video_model = load_video_model()
        run_dir = None
        if run_name.strip():
            from fewstep.nodes.core.train.distill_graph import run_folder

            run_dir = run_folder(run_name.strip(), [category, caption, repr(config), video_model.name], kind="atop")
        with tiny_cpu_work("cpu", 0):
            prior, losses = personalise(video_model, category_clips(category, config), caption, config, run_dir)
        metrics = {k: v for k, v in (prior.info or {}).items() if isinstance(v, (int, float, str))}
        return NodeOutput(prior, metrics, ui={"metrics": [metrics], "loss": losses})


class ATOPFitArticulation(Node):
    """Fits the moving part's joint to the evidence by differentiable rendering, from random initialisation."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="ATOPFitArticulation", display_name="ATOP Fit Articulation", category=CATEGORY,
            description="Fits joint type (revolute vs prismatic: both are fitted, the lower loss wins), axis, origin "
                        "and range through the soft rasteriser, guided by photometric + mask losses against the evidence, "
                        "by score distillation (SDS) from a personalised video model, or both; from screened random "
                        "restarts. Reads only the parts' rest geometry; if the input mesh has a joint, "
                        "METRICS also scores the fit against it.",
            inputs=[Link("mesh", "MESH", tooltip="the object at rest: a body and the moving part"),
                    Link("evidence", EVIDENCE),
                    String("part", "", tooltip="the moving part's name; empty: the input joint's child, else the "
                                               "second part"),
                    Combo("joint_type", list(JOINT_CHOICES), default="both"),
                    Int("restarts", 4, min=1, max=64, tooltip="random starts per joint type, optimised as one batch"),
                    Int("candidates", 128, min=0, max=4096, tooltip="random joints scored to pick the restarts (0 = off)"),
                    Int("steps", 100, min=1, max=100_000, tooltip="optimisation steps per joint type"),
                    Float("learning_rate", 0.05, min=1e-5, max=1.0, step=0.005, round=1e-5),
                    Int("seed", 0, min=0, max=2**31 - 1, control_after_generate=True),
                    Combo("guidance", GUIDANCE, default="photometric",
                          tooltip="photometric: match the evidence clips; sds: score distillation from the "
                                  "personalised video model (only the evidence's cameras are used); both: the sum"),
                    Float("sds_weight", 0.1, min=0.0, max=100.0, step=0.01, tooltip="weight of the SDS term under 'both'"),
                    Link("prior", PRIOR, optional=True, tooltip="ATOP Personalise Motion; needed for sds / both")],
            outputs=[Output("MESH", "MESH"), Output("METRICS", "METRICS"),
                     Output("IMAGE", "IMAGE", tooltip="the fitted motion rendered from the evidence cameras")])

    @classmethod
    def execute(cls, mesh: Any, evidence: Any, part: str, joint_type: str, restarts: int, candidates: int,
                steps: int, learning_rate: float, seed: int, guidance: str = "photometric", sds_weight: float = 0.1,
                prior: Any = None) -> NodeOutput:
        from fewstep.nodes.atop.fit import FitConfig, fit_articulation, fitted_mesh
        from fewstep.nodes.atop.report import fit_metrics, moving_part, render_fit
        from fewstep.nodes.core.threads import tiny_cpu_work

        name = moving_part(mesh, part)
        config = FitConfig(restarts=restarts, candidates=candidates, steps=steps, lr=learning_rate, seed=seed,
                           kinds=JOINT_CHOICES[joint_type], guidance=guidance, sds_weight=sds_weight)
        kinds = len(config.kinds)
        order = {kind: i for i, kind in enumerate(config.kinds)}

        def progress(kind: str, step: int, total: int, loss: float) -> None:
            report_progress(order[kind] * total + step, kinds * total, loss=loss)

        with tiny_cpu_work("cpu", 0):   # thousands of small ops: one thread (see core.threads)
            result = fit_articulation(mesh, name, evidence, config, progress, prior)
            fitted = fitted_mesh(mesh, name, result.best)
            images = render_fit(fitted, evidence)
        metrics = fit_metrics(mesh, name, result) | {"guidance": guidance}
        return NodeOutput(fitted, metrics, images,
                          ui={"metrics": [metrics], "loss": result.history[result.best.kind]})


NODES: tuple[type[Node], ...] = (ATOPArticulatedObject, ATOPMotionEvidence, ATOPPersonaliseMotion, ATOPFitArticulation)
