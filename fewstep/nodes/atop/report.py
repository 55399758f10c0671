"""What the fit node reports: which part moves, the fitted joint and its errors as METRICS, and renders of the
fitted motion from the evidence cameras."""

from __future__ import annotations

import torch

from fewstep.nodes.atop.evidence import MotionEvidence, render_states
from fewstep.nodes.atop.fit import FitResult, joint_errors
from fewstep.nodes.atop.objects import merge, object_size
from fewstep.nodes.core.mesh import ArticulatedMesh


def moving_part(mesh: ArticulatedMesh, part: str) -> str:
    """The named part; empty name: the child of the mesh's first joint, else the second part."""
    if not isinstance(mesh, ArticulatedMesh):
        raise ValueError(f"the articulation fit needs an articulated MESH (parts), got {type(mesh).__name__}")
    if part:
        if part not in mesh.parts:
            raise ValueError(f"part {part!r} is not in the mesh; its parts are {sorted(mesh.parts)}")
        return part
    if mesh.joints:
        return mesh.joints[0].child
    if len(mesh.parts) < 2:
        raise ValueError("the articulation fit needs a mesh of two parts or more (a body and the moving part)")
    return list(mesh.parts)[1]


def fit_metrics(mesh: ArticulatedMesh, part: str, result: FitResult) -> dict[str, float | int | str]:
    """METRICS: the chosen joint, each type's final loss, and — when the input mesh has a joint on this part —
    the errors against it (axis degrees, origin / object diagonal, range)."""
    best = result.best
    metrics: dict[str, float | int | str] = {
        "joint_type": best.kind,
        "axis": "(" + ", ".join(f"{x:.4f}" for x in best.axis) + ")",
        "origin": "(" + ", ".join(f"{x:.4f}" for x in best.origin) + ")",
        "lower": best.limits[0], "upper": best.limits[1],
    }
    metrics |= {f"loss_{kind}": fit.loss for kind, fit in result.by_kind.items()}
    truth = next((joint for joint in mesh.joints if joint.child == part), None)
    if truth is not None:
        errors = joint_errors(truth, best, object_size(mesh))
        metrics |= {key: (int(value) if isinstance(value, bool) else value) for key, value in errors.items()}
    return metrics


def render_fit(fitted: ArticulatedMesh, evidence: MotionEvidence) -> torch.Tensor:
    """The fitted joint swept through its fitted range (as many frames as the evidence), seen by the evidence
    cameras: IMAGE [V T, H, W, 3], view-major like the evidence batch."""
    joint = fitted.joints[0]
    values = torch.linspace(joint.limits[0], joint.limits[1], evidence.steps)
    states = [merge(list(fitted.posed({joint.name: float(v)}).values())) for v in values]
    with torch.no_grad():
        rgb, _ = render_states(states, evidence.cameras, background=evidence.background)
    return rgb.reshape(-1, *rgb.shape[2:]).clamp(0, 1).contiguous()
