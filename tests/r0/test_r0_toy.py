"""R0 on the 2-D Gaussian-mixture toy (fewstep/nodes/core/train/toy.py): the η-DDIM step's known coefficients, the rollout
against chained DDIM, reward maximisation moving samples up the reward, the weight regulariser bounding the
drift, R0+'s intermediate term, the LoRA drift formula, resume, and clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fewstep.nodes.core.train.loop import Checkpointer
from fewstep.nodes.core.train.toy import ToyStudent, make_teacher, toy_pool
from fewstep.nodes.core.train.vp import VPNet, ddim_to, guided_x0_eps
from fewstep.nodes.r0.generator import R0_TIMESTEPS, eta_ddim_step, rollout, trailing_timesteps
from fewstep.nodes.r0.loss import R0Batch, R0Loss
from fewstep.nodes.r0.regularizers import WeightDrift
from fewstep.nodes.r0.train import R0Config, arm, train_r0


class RightReward:
    """R(x) = x_0 (the first coordinate): maximising it moves samples to the right; objective = batch mean."""

    def objective(self, x: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        return x[:, 0].mean(), {"right": float(x[:, 0].detach().mean())}


def _student() -> VPNet:
    torch.manual_seed(0)
    teacher = make_teacher()
    return VPNet(ToyStudent(teacher.net, width=32), teacher.schedule, "v")


def _samples(view: VPNet, n: int = 256) -> torch.Tensor:
    cond = torch.eye(2)[torch.arange(n) % 2]
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        return rollout(view, torch.randn(n, 2, generator=gen), R0_TIMESTEPS, cond, None, 1.0, torch.zeros(n), gen).x0


def _cfg(**changes) -> R0Config:
    base = dict(steps=40, batch_size=64, lr=1e-2, guidance=1.0, random_eta=False, normalize_grads=False,
                weight_reg=0.0, lora_rank=0, grad_clip=0.0)
    return R0Config(**(base | changes))


def test_trailing_grid():
    assert trailing_timesteps(4) == R0_TIMESTEPS == (999, 749, 499, 249)
    assert trailing_timesteps(1) == (999,)


def test_eta_ddim_step_known_coefficients():
    schedule = _student().schedule
    t, s = torch.tensor([749]), torch.tensor([499])
    abar_t, abar_s = schedule.alphas_cumprod[749], schedule.alphas_cumprod[499]
    x0, eps, z = torch.randn(1, 2), torch.randn(1, 2), torch.randn(1, 2)
    # η = 0 is deterministic DDIM
    assert torch.allclose(eta_ddim_step(schedule, x0, eps, t, s, torch.zeros(1), z), ddim_to(schedule, x0, eps, s))
    # η = 1: the noise coefficient is the DDPM posterior std, sqrt((1-ᾱ_s)/(1-ᾱ_t) (1 - ᾱ_t/ᾱ_s)) (DDIM eq. 16)
    var = (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
    only_noise = eta_ddim_step(schedule, torch.zeros(1, 2), torch.zeros(1, 2), t, s, torch.ones(1), z)
    assert torch.allclose(only_noise, var.sqrt() * z, atol=1e-6)
    only_eps = eta_ddim_step(schedule, torch.zeros(1, 2), eps, t, s, torch.ones(1), torch.zeros(1, 2))
    assert torch.allclose(only_eps, (1 - abar_s - var).sqrt() * eps, atol=1e-6)


def test_rollout_at_eta_zero_is_chained_ddim():
    view = _student()
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    cond = torch.eye(2)[torch.arange(8) % 2]
    got = rollout(view, x, R0_TIMESTEPS, cond, None, 1.0, torch.zeros(8), torch.Generator().manual_seed(1))
    ts = list(R0_TIMESTEPS)
    for k, t in enumerate(ts):
        x0, eps = guided_x0_eps(view, x, torch.full((8,), t), cond, None, 1.0)
        if k + 1 < len(ts):
            x = ddim_to(view.schedule, x0, eps, torch.full((8,), ts[k + 1]))
    assert torch.allclose(got.x0, x0, atol=1e-5) and len(got.intermediate) == 3


def test_reward_maximisation_moves_samples_up_the_reward():
    view = _student()
    before = _samples(view)[:, 0].mean()
    state, history = train_r0(view, toy_pool(), RightReward(), lambda x: x, _cfg())
    after = _samples(view)[:, 0].mean()
    assert state.step == 40 and after > before + 1.0, (float(before), float(after))
    assert history[-1]["r_right"] > history[0]["r_right"] + 1.0


def test_weight_regulariser_bounds_the_drift():
    drifts = {}
    for lam in (0.0, 30.0, 3000.0):
        view = _student()
        _, history = train_r0(view, toy_pool(), RightReward(), lambda x: x, _cfg(weight_reg=lam))
        drifts[lam] = history[-1]["drift"]
    # the penalty λ d(θ) caps the drift: a larger λ keeps the weights strictly closer to θ0
    assert drifts[0.0] > 3 * drifts[30.0] > 9 * drifts[3000.0], drifts
    assert drifts[3000.0] < 1e-3


def test_random_eta_changes_training_samples_but_not_the_first_ones():
    view = _student()
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    cond = torch.eye(2)[torch.arange(16) % 2]
    with torch.no_grad():
        det = rollout(view, noise, R0_TIMESTEPS, cond, None, 1.0, torch.zeros(16), gen_a)
        sto = rollout(view, noise, R0_TIMESTEPS, cond, None, 1.0, torch.ones(16), gen_b)
    assert torch.allclose(det.intermediate[0], sto.intermediate[0])   # x̂0 at t_1 comes before any η-noise
    assert (det.x0 - sto.x0).abs().max() > 1e-2


def test_intermediate_supervision_adds_the_earlier_steps_rewards():
    view = _student()
    pool = toy_pool()

    def loss_of(weight: float) -> float:
        gen = torch.Generator().manual_seed(0)
        batch = R0Batch(prompts=["g0"] * 8, cond=pool.cond[:1].expand(8, -1), uncond=pool.uncond, shape=(8, 2),
                        generator=gen)
        fn = R0Loss(objective=RightReward().objective, decode=lambda x: x, guidance=1.0, random_eta=False,
                    intermediate_weight=weight)
        return float(fn(view, batch).detach())

    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(8, 2, generator=gen)
    with torch.no_grad():
        out = rollout(view, noise, R0_TIMESTEPS, pool.cond[:1].expand(8, -1), None, 1.0, torch.zeros(8), gen)
    mid = torch.stack([x[:, 0].mean() for x in out.intermediate]).mean()
    assert loss_of(0.5) == pytest.approx(loss_of(0.0) - 0.5 * float(mid), abs=1e-5)


def test_lora_drift_equals_the_merged_weight_distance():
    from fewstep.nodes.core.train.loop import add_lora, merged_state_dict

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    base = {k: v.clone() for k, v in net.state_dict().items()}
    net = add_lora(net, 2, ["0", "2"], alpha=4)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_()
    merged = merged_state_dict(net)
    diff = sum(float((merged[k] - base[k]).pow(2).sum()) for k in ("0.weight", "2.weight"))
    norm0 = sum(float(base[k].pow(2).sum()) for k in ("0.weight", "2.weight"))
    assert float(WeightDrift(net)().detach()) == pytest.approx(diff / norm0, rel=1e-4)


class StopAfter(RightReward):
    """RightReward that raises on call number ``calls + 1`` (an interrupt in the middle of a run)."""

    def __init__(self, calls: int) -> None:
        self.calls = calls

    def objective(self, x: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.calls == 0:
            raise KeyboardInterrupt("stop")
        self.calls -= 1
        return super().objective(x, prompts)


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    cfg = _cfg(steps=4, random_eta=True, weight_reg=1.0)
    full = _student()
    train_r0(full, toy_pool(), RightReward(), lambda x: x, cfg)
    ckpt = Checkpointer(tmp_path / "run", every=0)
    with pytest.raises(KeyboardInterrupt):
        train_r0(_student(), toy_pool(), StopAfter(2), lambda x: x, cfg, checkpointer=ckpt)
    assert Checkpointer.load(ckpt.latest()).step == 2          # the interrupt saved step 2 first
    resumed = _student()
    state, history = train_r0(resumed, toy_pool(), RightReward(), lambda x: x, cfg, checkpointer=ckpt)
    assert state.resumed_from == 2 and state.step == 4 and len(history) == 2 and len(state.losses) == 4
    for (_, a), (_, b) in zip(full.net.named_parameters(), resumed.net.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="needs a WeightDrift"):
        R0Loss(objective=RightReward().objective, decode=lambda x: x, weight_reg=1.0)
    with pytest.raises(ValueError, match="rewards is empty"):
        R0Config(rewards=())
    with pytest.raises(ValueError, match="strictly decreasing"):
        rollout(_student(), torch.zeros(1, 2), (249, 499), torch.zeros(1, 2), None, 1.0, torch.zeros(1), None)
    with pytest.raises(ValueError, match="unknown R0 arm"):
        arm("nope")
    assert copy.copy(arm("full")).normalize_grads and not arm("none").normalize_grads


def test_reward_chunks_give_the_same_loss_and_gradient():
    def objective(x: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        value = (x[:, 0].sin() * x[:, 1]).mean()                        # nonlinear, per sample
        return value, {"v": float(value.detach())}

    pool = toy_pool()
    results = []
    for chunk in (0, 3):
        view = _student()
        batch = R0Batch(prompts=["g0"] * 8, cond=pool.cond[:1].expand(8, -1), uncond=pool.uncond, shape=(8, 2),
                        generator=torch.Generator().manual_seed(0))
        fn = R0Loss(objective=objective, decode=lambda x: x, guidance=1.0, random_eta=True, reward_chunk=chunk)
        loss = fn(view, batch)
        loss.backward()
        results.append((float(loss.detach()), fn.last["r_v"], [p.grad.clone() for p in view.net.parameters()
                                                                if p.grad is not None]))
    (l0, v0, g0), (l3, v3, g3) = results
    assert l0 == pytest.approx(l3, abs=1e-6) and v0 == pytest.approx(v3, abs=1e-6)
    assert len(g0) == len(g3) > 0 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g0, g3, strict=True))
