"""The TDM run on the shared trainer: exact resume, the pair optimizer (lr ratio, per-network clipping),
TDM-unify's step input folded out of a UNet, configuration errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewstep.nodes.core.train.loop import Checkpointer
from fewstep.nodes.core.train.toy import ToyStudent, make_teacher, toy_pool
from fewstep.nodes.tdm.train import PairAdamW, TDMConfig, build_run, distill_tdm, preset

TOY = dict(guidance=1.0, lr=1e-2, generator_lr_ratio=0.1, batch_size=32)


class Boom(Exception):
    pass


class _CrashingPool:
    """The toy's prompt pool, raising on its n-th batch (step n − 1 dies before it finishes)."""

    def __init__(self, at_call: int) -> None:
        self.pool, self.calls, self.at = toy_pool(), 0, at_call

    def batch(self, size: int, gen: torch.Generator):
        self.calls += 1
        if self.calls == self.at:
            raise Boom
        return self.pool.batch(size, gen)


def _run(cfg: TDMConfig, ema: bool = False):
    torch.manual_seed(0)
    teacher = make_teacher()
    cd = 8 if cfg.unify else 0
    return teacher, build_run(teacher, cfg, ToyStudent(teacher.net, 32, cd), ToyStudent(teacher.net, 32, cd),
                              prediction_type="v")


@pytest.mark.parametrize("name", ["tdm", "tdm_unify"])
def test_resume_after_a_crash_repeats_the_uninterrupted_run(tmp_path, name):
    cfg = preset(name, steps=8, ema_decay=0.9, **TOY)
    teacher, full = _run(cfg)
    ref = distill_tdm(teacher, full, toy_pool(), cfg)

    teacher, crashed = _run(cfg)
    ckpt = Checkpointer(tmp_path / "run", every=3)
    with pytest.raises(Boom):
        distill_tdm(teacher, crashed, _CrashingPool(at_call=6), cfg, checkpointer=ckpt)
    assert Checkpointer.load(ckpt.latest()).step == 5          # saved on the crash, at the last finished step
    teacher, resumed = _run(cfg)
    state = distill_tdm(teacher, resumed, toy_pool(), cfg, checkpointer=ckpt)
    assert state.resumed_from == 5
    assert state.losses == pytest.approx(ref.losses, rel=1e-5)
    for (name_a, a), (_, b) in zip(full.pair.state_dict().items(), resumed.pair.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name_a)
    for a, b in zip(full.ema_target.parameters(), resumed.ema_target.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_pair_optimizer_scales_the_students_lr_and_clips_each_network():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(3))
    opt = PairAdamW([{"params": [a], "lr_scale": 0.2, "max_norm": 1.0},
                     {"params": [b], "lr_scale": 1.0, "max_norm": 0.0}], lr=0.1, weight_decay=0.0)
    a.grad, b.grad = torch.full((3,), 100.0), torch.full((3,), 100.0)
    opt.step()
    # Adam's first step moves every coordinate by lr · sign(g): 0.02 for the student group, 0.1 for the other
    torch.testing.assert_close(a.detach(), torch.full((3,), -0.02))
    torch.testing.assert_close(b.detach(), torch.full((3,), -0.1))
    assert a.grad.norm().item() == pytest.approx(1.0)          # clipped in place to its group's max norm
    assert b.grad.norm().item() == pytest.approx(100.0 * 3**0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]    # the trainer's lr is left as it set it


def test_fold_steps_reproduces_the_k_conditioned_unet():
    from diffusers import UNet2DConditionModel

    from fewstep.nodes.tdm.loss import steps_condition
    from fewstep.nodes.tdm.steps import add_steps_input, fold_steps

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, cross_attention_dim=32,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                attention_head_dim=4, norm_num_groups=32)
    x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([224, 899]), torch.randn(2, 5, 32)
    with torch.no_grad():
        aware = add_steps_input(unet)
        torch.testing.assert_close(aware(x, t, c, timestep_cond=steps_condition(2, 2, "cpu")).sample,
                                   unet(x, t, c).sample)      # zero-initialised: starts as the teacher
        nn.init.normal_(aware.time_embedding.cond_proj.weight)
        outs = []
        for k in (1, 4):
            plain = fold_steps(aware, k)
            assert plain.config["time_cond_proj_dim"] is None
            want = aware(x, t, c, timestep_cond=steps_condition(k, 2, "cpu")).sample
            torch.testing.assert_close(plain(x, t, c).sample, want, atol=1e-5, rtol=1e-4)
            outs.append(want)
        assert not torch.allclose(outs[0], outs[1], atol=1e-3)  # K really changes the output
    with pytest.raises(ValueError, match="no steps input"):
        fold_steps(unet, 2)


@pytest.mark.parametrize(("changes", "message"), [
    (dict(steps=0), "steps >= 1"), (dict(student_steps=9), "student_steps in 1..8"),
    (dict(student_steps=8, total_steps=90), "own interval"), (dict(ema_decay=1.0), "ema_decay"),
    (dict(lora_rank=-1), "LoRA ranks")])
def test_bad_configurations_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        TDMConfig(**changes)
    with pytest.raises(ValueError, match="unknown TDM preset 'lcm'"):
        preset("lcm")
