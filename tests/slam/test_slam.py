"""SLAM: interpolation endpoints, the γ input and folding it out, and a toy distillation."""

from __future__ import annotations

import pytest
import torch

from fewstep.nodes.core.train.consistency import lcm_timesteps
from fewstep.nodes.core.train.distill import build_student, distill, preset
from fewstep.nodes.core.train.gamma import gamma_embedding
from fewstep.nodes.core.train.toy import student_samples, teacher_ddim_samples, toy_pool, wasserstein2
from fewstep.nodes.slam.loss import interpolate, make_loss


def test_interpolation_endpoints():
    gen = torch.Generator().manual_seed(0)
    x_nk, x_n = torch.randn(2, 3, generator=gen), torch.randn(2, 3, generator=gen)
    a_nk, a_n = torch.tensor([0.3, 0.6]), torch.tensor([0.4, 0.7])
    s_n = (1 - a_n**2).sqrt()
    x1, s1 = interpolate(x_nk, x_n, a_nk, a_n, s_n, torch.ones(2))
    torch.testing.assert_close(x1, x_nk)
    torch.testing.assert_close(s1, (1 - a_nk**2).sqrt())                 # γ = 1: σ_{n+k}
    x0, s0 = interpolate(x_nk, x_n, a_nk, a_n, s_n, torch.zeros(2))
    r = a_nk / a_n
    torch.testing.assert_close(x0, r[:, None] * x_n)                     # γ = 0: rescaled x_n
    torch.testing.assert_close(s0, r * s_n)
    xh, _ = interpolate(x_nk, x_n, a_nk, a_n, s_n, torch.full((2,), 0.5))
    torch.testing.assert_close(xh, 0.5 * x_nk + 0.5 * r[:, None] * x_n)


def test_gamma_one_is_lcms_w_zero_slot():
    emb = gamma_embedding(torch.tensor([1.0, 0.0]), 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))   # sin 0, cos 0
    assert not torch.allclose(emb[1], emb[0])


def test_slam_student_beats_teacher_two_step_ddim(toy):
    teacher, student, cond, ref = toy
    cfg = preset("slam", guidance=1.0, lr=3e-3, batch_size=128, steps=300, skip=100, gamma_dim=16,
                 state_source="teacher")
    trained = build_student(student, cfg)
    distill(teacher, trained, toy_pool(), cfg, make_loss(cfg))
    one = gamma_embedding(torch.ones(cond.shape[0]), 16)
    w_teacher = wasserstein2(teacher_ddim_samples(teacher, cond, 2), ref)
    w_student = wasserstein2(student_samples(trained.view, cond, lcm_timesteps(2, origin_steps=10), one), ref)
    assert w_student < 0.93 * w_teacher, (w_student, w_teacher)


def test_slam_real_state_source_needs_latents(toy):
    teacher, student, _, _ = toy
    cfg = preset("slam", guidance=1.0, steps=1, batch_size=4, gamma_dim=16, state_source="real")
    with pytest.raises(ValueError, match="batch.latents"):
        distill(teacher, build_student(student, cfg), toy_pool(), cfg, make_loss(cfg))


def test_fold_gamma_keeps_the_gamma_one_output_on_a_tiny_unet():
    from diffusers import UNet2DConditionModel

    from fewstep.nodes.core.train.gamma import add_gamma_input, fold_gamma

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, cross_attention_dim=32,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                attention_head_dim=4, norm_num_groups=32)
    x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 5, 32)
    with torch.no_grad():
        student = add_gamma_input(unet, 16)
        one = gamma_embedding(torch.ones(2), 16)
        torch.testing.assert_close(student(x, t, c, timestep_cond=one).sample, unet(x, t, c).sample)  # zero init
        torch.nn.init.normal_(student.time_embedding.cond_proj.weight)
        plain = fold_gamma(student)
        assert plain.config["time_cond_proj_dim"] is None
        torch.testing.assert_close(plain(x, t, c).sample, student(x, t, c, timestep_cond=one).sample,
                                   atol=1e-5, rtol=1e-4)
        assert not torch.allclose(plain(x, t, c).sample, unet(x, t, c).sample, atol=1e-3)


def test_gamma_one_share_sets_that_share_to_exactly_one():
    from fewstep.nodes.slam.loss import SLAMLoss

    gen = torch.Generator().manual_seed(0)
    paper = SLAMLoss().sample_gamma(4000, gen, torch.device("cpu"))
    assert (paper == 1.0).sum() == 0                       # U(0,1): the inference condition is never drawn
    gen = torch.Generator().manual_seed(0)
    ours = SLAMLoss(gamma_one=0.25).sample_gamma(4000, gen, torch.device("cpu"))
    share = float((ours == 1.0).float().mean())
    assert 0.22 < share < 0.28, share                      # binomial sd 0.007 at n = 4000
    assert float(ours[ours < 1.0].mean()) == pytest.approx(0.5, abs=0.03)


def test_gamma_one_is_slam_only():
    with pytest.raises(ValueError, match="gamma_one"):
        preset("lcm", gamma_one=0.25)
    assert preset("slam", gamma_one=0.25).fingerprint() != preset("slam").fingerprint()
