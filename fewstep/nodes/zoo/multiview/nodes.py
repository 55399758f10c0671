"""Node of the built-in multi-view teacher: its loader (``PRD_TEACHER``).

The node id and link type keep the names they had when the teacher shipped inside the PRD pack, so saved
graphs (``graphs/prd_text_to_mesh.json``) and workflows still load; any pack that distils from a
camera-conditioned teacher can take the link.
"""

from __future__ import annotations

from fewstep.app.api import Node, NodeOutput, Output, Schema, cached_model

# fewstep.nodes.zoo.multiview.builtin.MultiviewTeacher: the teacher + the caption embedder it was trained with
MULTIVIEW_TEACHER = "PRD_TEACHER"


class MultiviewTeacherLoader(Node):
    """The shipped camera-conditioned multi-view teacher (trained on renders of coloured primitives)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="PRDLoadTeacher", display_name="Load Multi-view Teacher (built-in)", category="loaders/3d",
            description="A tiny pixel-space diffusion UNet (16 px) conditioned on a caption embedding (MiniLM) and a "
                        "camera azimuth / elevation, trained on renders of 24 coloured primitives (model card: "
                        "fewstep-tiny-mv-teacher.md in the zoo's weights). The stand-in for MVDream in score "
                        "distillation (PRD).",
            inputs=[], outputs=[Output("teacher", MULTIVIEW_TEACHER)])

    @classmethod
    def execute(cls) -> NodeOutput:
        from fewstep.nodes.zoo.multiview.builtin import TEACHER_FILE, load_multiview_teacher, weights_dir

        return NodeOutput(cached_model(weights_dir() / TEACHER_FILE, "float32", "cpu", load_multiview_teacher))


NODES: tuple[type[Node], ...] = (MultiviewTeacherLoader,)
