"""The built-in multi-view teacher: its output depends on the camera, the shipped one has learned to use it (denoising
a render is more accurate under the render's own camera than under a wrong one), and the data it learned from."""

from __future__ import annotations

import torch

from fewstep.nodes.zoo.multiview.data import (
    Primitive,
    ViewSpec,
    camera_features,
    parse_caption,
    render_primitives,
    sdf_box,
    sdf_cone,
    sdf_cylinder,
)


def test_teacher_output_changes_with_the_view(tiny_multiview_teacher):
    x, t, text = torch.randn(2, 3, 16, 16), torch.tensor([500, 500]), torch.randn(2, 8)
    front = camera_features(torch.tensor([[0.0, 10.0], [0.0, 10.0]]))
    side = camera_features(torch.tensor([[90.0, 10.0], [90.0, 10.0]]))
    a, b = tiny_multiview_teacher.eps(x, t, text, front), tiny_multiview_teacher.eps(x, t, text, side)
    assert (a - b).abs().mean() > 1e-4
    torch.testing.assert_close(tiny_multiview_teacher.eps(x, t, text, front), a)          # deterministic


def test_shipped_teacher_denoises_better_under_the_true_camera():
    from fewstep.nodes.zoo.multiview.builtin import CaptionEmbedder, load_teacher

    teacher = load_teacher()
    prims = [Primitive("cube", "red"), Primitive("cone", "blue"), Primitive("cylinder", "green")]
    az, el = [20.0, 200.0, 110.0], [25.0, 5.0, 15.0]
    x0 = render_primitives(prims, az, el).permute(0, 3, 1, 2) * 2 - 1                # [3, 3, 16, 16]
    text = CaptionEmbedder()([p.caption() for p in prims])
    gen = torch.Generator().manual_seed(0)
    true_cam = camera_features(torch.tensor([az, el]).T)
    wrong_cam = camera_features(torch.tensor([[a + 180.0 for a in az], [30.0 - e for e in el]]).T)
    err_true = err_wrong = 0.0
    for t in (300, 500, 700):
        noise = torch.randn(x0.shape, generator=gen)
        a = teacher.alphas[t]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        tt = torch.full((3,), t)
        with torch.no_grad():
            err_true += float((teacher.eps(x_t, tt, text, true_cam) - noise).pow(2).mean())
            err_wrong += float((teacher.eps(x_t, tt, text, wrong_cam) - noise).pow(2).mean())
    assert err_true < err_wrong


def test_primitive_sdfs_and_captions():
    p = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.42, 0.0], [0.4, 0.0, 0.0], [0.0, 0.9, 0.0]])
    assert sdf_box(p)[0] == -0.4 and abs(float(sdf_box(p)[2])) < 1e-6
    assert abs(float(sdf_cylinder(p)[1])) < 1e-6 and float(sdf_cylinder(p)[3]) > 0.4
    assert float(sdf_cone(p)[0]) < 0 and abs(float(sdf_cone(p)[1])) < 1e-6          # the apex is on the surface
    assert parse_caption("A purple Cone, please") == Primitive("cone", "purple") and parse_caption("a dog") is None
    assert render_primitives([Primitive("sphere", "white")], [0.0], [0.0]).shape == (1, ViewSpec().size,
                                                                                     ViewSpec().size, 3)
