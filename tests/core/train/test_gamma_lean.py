"""SLAM's γ input on the built-in (lean) UNet: no diffusers import, the same numbers as diffusers' slot."""

from __future__ import annotations

import torch

from fewstep.nodes.core.train.gamma import add_gamma_input, fold_gamma, gamma_embedding
from fewstep.nodes.zoo import builtin
from fewstep.nodes.zoo.lean import LeanUNet

DIM = 16


def _inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(batch, 4, 16, 16, generator=gen), torch.tensor([999, 300]),
            torch.randn(batch, 77, 384, generator=gen))


def _teacher() -> LeanUNet:
    unet = builtin.load_builtin(builtin.BUILTIN_CHECKPOINT, "cpu").unet
    assert isinstance(unet, LeanUNet)
    return unet


@torch.no_grad()
def test_gamma_input_on_the_lean_unet_starts_at_the_teacher_and_folds_at_gamma_one() -> None:
    teacher = _teacher()
    x, t, ctx = _inputs()
    student = add_gamma_input(teacher, DIM)
    assert isinstance(student, LeanUNet) and student.time_embedding.cond_proj.weight.abs().sum() == 0
    gamma = gamma_embedding(torch.tensor([1.0, 0.3]), DIM)
    same = student(x, t, encoder_hidden_states=ctx, timestep_cond=gamma).sample
    torch.testing.assert_close(same, teacher(x, t, encoder_hidden_states=ctx).sample, rtol=0, atol=0)

    torch.nn.init.normal_(student.time_embedding.cond_proj.weight, std=0.1)      # as if trained
    at_one = student(x, t, encoder_hidden_states=ctx, timestep_cond=gamma_embedding(torch.ones(2), DIM)).sample
    plain = fold_gamma(student)
    assert isinstance(plain, LeanUNet) and plain.time_embedding.cond_proj is None
    # folding moves cond_proj(emb(1)) into linear_1's bias: the same sum in another order (fp32 rounding)
    torch.testing.assert_close(plain(x, t, encoder_hidden_states=ctx).sample, at_one, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(at_one, same, atol=1e-3), "the trained γ slot must change the output"


@torch.no_grad()
def test_lean_gamma_slot_matches_diffusers_cond_proj() -> None:
    from diffusers import UNet2DConditionModel

    lean = add_gamma_input(_teacher(), DIM)
    torch.nn.init.normal_(lean.time_embedding.cond_proj.weight, std=0.1)
    ref = UNet2DConditionModel(**{**dict(lean.config), "time_cond_proj_dim": DIM})
    ref.load_state_dict(lean.state_dict(), strict=True)
    x, t, ctx = _inputs()
    cond = gamma_embedding(torch.tensor([0.2, 0.9]), DIM)
    torch.testing.assert_close(lean(x, t, encoder_hidden_states=ctx, timestep_cond=cond).sample,
                               ref.eval()(x, t, encoder_hidden_states=ctx, timestep_cond=cond).sample,
                               rtol=1e-4, atol=1e-4)
