"""ATOP: the procedural objects' joints, the motion evidence, the joint kinematics, and the fit recovering a
known joint from random initialisation on tiny evidence."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.nodes.atop.evidence import EvidenceConfig, render_evidence
from fewstep.nodes.atop.fit import (
    FitConfig,
    JointFit,
    fit_articulation,
    fitted_mesh,
    joint_errors,
    move_part,
    rodrigues,
)
from fewstep.nodes.atop.objects import OBJECTS, make_object, object_size

TINY = EvidenceConfig(views=2, frames=3, size=24)


@pytest.mark.parametrize("kind", sorted(OBJECTS))
def test_objects_have_their_joint_and_the_part_moves_in_the_evidence(kind):
    mesh = make_object(kind, seed=3)
    joint = mesh.joints[0]
    assert joint.kind == ("prismatic" if kind == "drawer" else "revolute")
    assert abs(joint.axis[1]) in (0.0, 1.0)                      # yawed about +y: horizontal axes stay horizontal
    assert joint.limits[0] == 0.0 and joint.limits[1] > 0.3
    evidence = render_evidence(mesh, TINY)
    assert evidence.frames.shape == (2, 3, 24, 24, 3) and evidence.masks.shape == (2, 3, 24, 24)
    assert evidence.image_batch().shape == (6, 24, 24, 3)
    assert (evidence.masks > 0.5).float().mean() > 0.1            # the object fills a good part of the view
    # the first and last frames differ (the part moved), and the rest pose equals a render of the mesh at 0
    assert (evidence.frames[:, 0] - evidence.frames[:, -1]).abs().amax() > 0.3
    with pytest.raises(ValueError, match="unknown articulated object"):
        make_object("teapot", 0)


def test_rodrigues_and_moves_agree_with_the_joint_type():
    from fewstep.nodes.core.mesh import Joint

    joint = Joint("j", "revolute", (0.6, 0.0, 0.8), (0.1, 0.2, 0.3), (0.0, 1.0), "a", "b")
    rotation, translation = joint.transform(0.7)
    points = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = points @ rotation.T + translation
    moved = move_part(points, "revolute", torch.tensor([joint.axis], dtype=torch.float64),
                      torch.tensor([joint.origin], dtype=torch.float64), torch.tensor([[0.7]], dtype=torch.float64))
    assert torch.allclose(moved[0, 0], expected, atol=1e-12)
    assert torch.allclose(rodrigues(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(math.pi / 2)) @ torch.tensor([1.0, 0, 0]),
                          torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    slid = move_part(points, "prismatic", torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), torch.zeros(1, 3),
                     torch.tensor([[0.0, 0.5]], dtype=torch.float64))
    assert torch.allclose(slid[0, 1] - points, torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64).expand(5, 3))


def test_joint_errors_are_line_distances_and_angles():
    from fewstep.nodes.core.mesh import Joint

    truth = Joint("j", "revolute", (1.0, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 1.5), "a", "b")
    tilt = math.radians(3.0)
    # the fitted origin lies elsewhere on a parallel line 0.1 away: origin error = 0.1 / size, not the point gap
    fit = JointFit("revolute", (math.cos(tilt), math.sin(tilt), 0.0), (2.0, 0.6 + 2.0 * math.tan(tilt), 0.0),
                   (0.0, 0.7, 1.4), 0.0)
    errors = joint_errors(truth, fit, object_size=2.0)
    assert errors["kind_correct"] is True
    assert errors["axis_error_deg"] == pytest.approx(3.0, abs=1e-9)
    assert errors["origin_error"] == pytest.approx(0.1 * math.cos(tilt) / 2.0, rel=1e-6)
    assert errors["range_error_deg"] == pytest.approx(math.degrees(0.1))
    flipped = joint_errors(truth, JointFit("revolute", (-1.0, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 1.5), 0.0), 2.0)
    assert flipped["axis_error_deg"] == pytest.approx(180.0) and flipped["axis_line_error_deg"] == pytest.approx(0.0)


def test_fit_recovers_a_known_hinge_from_random_starts():
    mesh = make_object("box_lid", seed=1)
    truth = mesh.joints[0]
    # 3 views: with 2 views (seed 1) a revolute start settled on a wrong axis (77°) at loss 0.025 vs 0.0024
    evidence = render_evidence(mesh, EvidenceConfig(views=3, frames=3, size=32))
    config = FitConfig(restarts=2, candidates=64, sweep=32, steps=60, seed=0)
    result = fit_articulation(mesh, "lid", evidence, config)
    errors = joint_errors(truth, result.best, object_size(mesh))
    assert errors["kind_correct"] is True
    assert result.by_kind["revolute"].loss < 0.5 * result.by_kind["prismatic"].loss
    assert errors["axis_error_deg"] < 3.0 and errors["origin_error"] < 0.03
    assert errors["range_error_deg"] < 5.0
    fitted = fitted_mesh(mesh, "lid", result.best)
    assert fitted.joints[0].kind == "revolute" and fitted.joints[0].child == "lid" and fitted.joints[0].parent == "body"


def test_fit_rejects_unknown_parts_and_kinds():
    mesh = make_object("drawer", seed=0)
    evidence = render_evidence(mesh, TINY)
    with pytest.raises(ValueError, match="not in the mesh"):
        fit_articulation(mesh, "handle", evidence, FitConfig(steps=1))
    with pytest.raises(ValueError, match="joint kinds"):
        FitConfig(kinds=("spherical",))
