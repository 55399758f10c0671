"""TDM with the flow parameterisation (nodes/tdm/flow.py) on an exact rectified-flow Gaussian-mixture toy:
velocity <-> (x0, eps) conversions, the student's σ's, the rollout = Euler, the fake score's DSM formula in
velocity form, the generator's direction, distribution matching moving a student toward the mixture, and an
exact resume of a run on a tiny video DiT."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fewstep.nodes.core.train.flow_param import (
    FLOW_PATH,
    FlowNet,
    eps_to_velocity,
    flow_snr,
    guided_flow_x0_eps,
    velocity_to_x0_eps,
    x0_eps_to_velocity,
    x0_to_velocity,
)
from fewstep.nodes.core.train.loop import Checkpointer
from fewstep.nodes.core.train.prompts import PromptPool
from fewstep.nodes.core.video_sampling import sample_flow_euler, shifted_sigmas
from fewstep.nodes.tdm.flow import (
    TDMFlowLoss,
    flow_rollout,
    flow_student_sigmas,
    sample_tdm_flow,
    student_sigma_schedule,
)
from fewstep.nodes.tdm.loss import diffuse_within, importance_weight
from fewstep.nodes.tdm.train import build_run, distill_tdm
from fewstep.nodes.tdm.video import TDMVideoConfig

MEANS = 2.0 * torch.stack([torch.cos(torch.arange(8) * math.pi / 4), torch.sin(torch.arange(8) * math.pi / 4)], 1)
STD = 0.08


class FlowGMM(nn.Module):
    """Exact velocity of a 2-D Gaussian mixture under rectified flow (modes alternate between 2 groups; cond is
    a one-hot group, zeros = unconditional): x_σ | k ~ N((1−σ) μ_k, ((1−σ)² s² + σ²) I),
    E[x0 | x_σ, k] = μ_k + (1−σ) s² (x_σ − (1−σ) μ_k) / var, v = (x − E[x0 | x]) / σ."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("means", MEANS.clone())
        self.register_buffer("groups", torch.arange(8) % 2)

    def posterior_mean(self, x, sigma, cond):
        a, s = (1 - sigma)[:, None], sigma[:, None]
        var = a**2 * STD**2 + s**2                                                  # [B, 1]
        diff = x[:, None, :] - a[:, :, None] * self.means[None]                    # [B, K, 2]
        allowed = cond[:, self.groups] > 0
        allowed = allowed | ~allowed.any(1, keepdim=True)
        resp = torch.softmax((-(diff**2).sum(-1) / (2 * var)).masked_fill(~allowed, -math.inf), 1)
        return (resp[:, :, None] * (self.means[None] + (a * STD**2 / var)[:, :, None] * diff)).sum(1)

    def forward(self, x, sigma, cond, timestep_cond=None):
        sigma = sigma.float().clamp_min(1e-4)
        return (x - self.posterior_mean(x.float(), sigma, cond.float())) / sigma[:, None]


class FlowStudent(nn.Module):
    """The teacher's velocity plus a zero-initialised MLP residual (the toy's "copy of the teacher")."""

    def __init__(self, teacher: FlowGMM, width: int = 64) -> None:
        super().__init__()
        self.teacher = teacher
        self.inp = nn.Linear(2 + 16 + 2, width)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x, sigma, cond, timestep_cond=None):
        tt = sigma.float()[:, None] * (2.0 ** torch.arange(8.0))[None] * math.pi
        h = self.inp(torch.cat([x.float(), tt.sin(), tt.cos(), cond.float()], 1))
        return self.teacher(x, sigma, cond) + self.body(h)


def toy_pool() -> PromptPool:
    return PromptPool(cond=torch.eye(3)[:, :2], uncond=torch.zeros(1, 2), prompts=["g0", "g1", ""],
                      latent_shape=(2,))


def group0(n: int) -> torch.Tensor:
    return nn.functional.one_hot(torch.zeros(n, dtype=torch.long), 2).float()


# ----------------------------------------------------------------------------- parameterisation
def test_velocity_x0_eps_conversions_round_trip():
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, 4, generator=gen), torch.randn(6, 3, 4, generator=gen)
    sigma = torch.tensor([0.05, 0.2, 0.5, 0.75, 0.9, 0.999])
    x = (1 - sigma)[:, None, None] * x0 + sigma[:, None, None] * eps               # x_σ = (1 − σ) x0 + σ ε
    v = x0_eps_to_velocity(x0, eps)
    torch.testing.assert_close(v, eps - x0)
    x0_back, eps_back = velocity_to_x0_eps(v, x, sigma)
    torch.testing.assert_close(x0_back, x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(eps_back, eps, atol=1e-5, rtol=0)
    torch.testing.assert_close(x0_to_velocity(x0, x, sigma), v, atol=1e-4, rtol=0)
    torch.testing.assert_close(eps_to_velocity(eps[:5], x[:5], sigma[:5]), v[:5], atol=1e-4, rtol=0)   # σ < 1
    # the DDIM jump with the model's own ε̂ is the Euler step: (1 − s) x̂0 + s ε̂ = x + (s − σ) v̂
    s = sigma * 0.5
    torch.testing.assert_close((1 - s)[:, None, None] * x0_back + s[:, None, None] * eps_back,
                               x + (s - sigma)[:, None, None] * v, atol=1e-5, rtol=0)
    torch.testing.assert_close(flow_snr(torch.tensor([0.5, 0.25])), torch.tensor([1.0, 9.0]))


def test_guidance_on_velocity_is_guidance_on_x0():
    teacher = FlowNet(FlowGMM())
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    sigma = torch.full((5,), 0.6)
    x0_g, _ = guided_flow_x0_eps(teacher, x, sigma, group0(5), torch.zeros(1, 2), 3.0)
    x0_c, _ = teacher.x0_eps(x, sigma, group0(5))
    x0_u, _ = teacher.x0_eps(x, sigma, torch.zeros(5, 2))
    torch.testing.assert_close(x0_g, x0_u + 3.0 * (x0_c - x0_u), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- student schedule and rollout
def test_student_sigmas_are_the_teachers_shifted_grid():
    assert flow_student_sigmas(4, 3.0) == pytest.approx([1.0, 0.9, 0.75, 0.5])
    assert flow_student_sigmas(2, 3.0) == pytest.approx([1.0, 0.75])
    torch.testing.assert_close(student_sigma_schedule(4, 3.0), shifted_sigmas(4, 3.0))
    with pytest.raises(ValueError, match="steps must be in"):
        flow_student_sigmas(0)


def test_rollout_is_euler_on_the_students_own_velocity():
    teacher = FlowNet(FlowGMM())
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    sig = flow_student_sigmas(4, 3.0)
    ro = flow_rollout(teacher, noise, sig, group0(64))

    def denoiser(x, sigma, cond):
        return teacher.x0_eps(x, sigma.reshape(1).expand(x.shape[0]), cond)[0]

    states = []
    out = sample_flow_euler(denoiser, noise, student_sigma_schedule(4, 3.0), cond=group0(64),
                            callback=lambda info: states.append(info["x"]))
    torch.testing.assert_close(ro.states, torch.stack(states), atol=1e-5, rtol=0)
    torch.testing.assert_close(sample_tdm_flow(teacher, noise, sig, group0(64)), out, atol=1e-5, rtol=0)
    torch.testing.assert_close(ro.next_sigmas(), torch.tensor([0.9, 0.75, 0.5, 0.0]))


def test_diffusing_within_the_interval_has_the_flow_forward_marginal():
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    x0, eps, z = (torch.randn(n, 2, generator=gen) for _ in range(3))
    s_mid, tau = torch.full((n,), 0.5), torch.full((n,), 0.7)
    x_tau, mixed = diffuse_within(FLOW_PATH, x0, eps, s_mid, tau, z)
    torch.testing.assert_close(x_tau, 0.3 * x0 + 0.7 * mixed)                        # x_τ = (1 − τ) x̂0 + τ ñ
    assert mixed.std().item() == pytest.approx(1.0, abs=0.01)                      # Gaussian ε̂ ⇒ ñ ~ N(0, I)


# ----------------------------------------------------------------------------- the two losses
class Recorder(nn.Module):
    """A flow network (a fixed random linear map) that records the states and σ it is called with."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 2, generator=torch.Generator().manual_seed(5)) * 0.3)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, sigma, cond, timestep_cond=None):
        self.calls.append((x.detach().clone(), sigma.detach().clone()))
        return x @ self.w + sigma[:, None]


def test_fake_score_loss_is_flow_matching_to_the_students_x0_with_the_stated_weight():
    """L_fake = τ² · min(((1−τ)/τ)², 5) · w_IS · mean(v_fake(x_τ, τ) − (x_τ − x̂0)/τ)², with z and ñ recovered
    from x_τ: the velocity form of min(SNR, 5) w_IS ‖x̂0_fake − x̂0‖² (nodes/tdm/flow.py)."""
    student, fake_net = FlowNet(FlowGMM()), Recorder()
    fake = FlowNet(fake_net)
    pool = toy_pool()
    batch = pool.batch(256, torch.Generator().manual_seed(0))
    sig = flow_student_sigmas(4, 3.0)
    ro = flow_rollout(student, torch.randn(256, 2, generator=torch.Generator().manual_seed(1)), sig, batch.cond)
    loss = TDMFlowLoss().fake_loss(fake, ro, batch, None)
    (x_tau, tau), = fake_net.calls
    bounds = torch.tensor([*sig, 0.0])
    k = ((tau[:, None] < bounds[None, :-1] - 0.01 + 1e-6) & (tau[:, None] >= bounds[None, 1:].clamp_min(0.02))
         ).float().argmax(1)                                                     # the step whose interval holds τ
    rows = torch.arange(256)
    x0, eps, s_m = ro.x0[k, rows], ro.eps[k, rows], bounds[k + 1]
    assert ((tau >= s_m.clamp_min(0.02)) & (tau < bounds[k] - 0.01)).all()       # τ inside its own interval
    x_mid = (1 - s_m)[:, None] * x0 + s_m[:, None] * eps
    ratio = ((1 - tau) / (1 - s_m))[:, None]
    beta = (tau[:, None] ** 2 - (ratio * s_m[:, None]) ** 2).sqrt()
    z = (x_tau - ratio * x_mid) / beta
    n_eff = (x_tau - (1 - tau)[:, None] * x0) / tau[:, None]
    w_is = torch.exp(-0.5 * (n_eff**2).mean(1)) / torch.exp(-0.5 * (z**2).mean(1))
    v_target = (x_tau - x0) / tau[:, None]
    expected = tau**2 * (((1 - tau) / tau) ** 2).clamp(max=5.0) * w_is * ((fake_net(x_tau, tau, None) - v_target) ** 2).mean(1)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(w_is, torch.ones_like(w_is))                         # the weight is not trivial here


def test_generator_gradient_points_from_fake_to_real():
    """Flow stubs whose x̂0 is a constant: the pseudo-Huber DMD loss pushes x̂0 along sign(real − fake)."""

    class ConstX0(nn.Module):
        def __init__(self, value: torch.Tensor, trainable: bool = False) -> None:
            super().__init__()
            self.value = nn.Parameter(value.clone(), requires_grad=trainable)

        def forward(self, x, sigma, cond, timestep_cond=None):
            return x0_to_velocity(self.value.expand_as(x), x, sigma.clamp_min(1e-3))   # x̂0 = value exactly

    student = FlowNet(ConstX0(torch.zeros(2), trainable=True))
    real, fake = FlowNet(ConstX0(torch.tensor([1.0, -1.0]))), FlowNet(ConstX0(torch.zeros(2)))
    batch = toy_pool().batch(16, torch.Generator().manual_seed(0))
    ro = flow_rollout(student, torch.randn(16, 2), flow_student_sigmas(2), batch.cond)
    TDMFlowLoss(guidance=1.0).generator_loss(student, real, fake, ro, batch, None).mean().backward()
    # d/dx̂0 of (sqrt((r − f)² + c²) − c)/mean|x̂0 − r| with |x̂0 − r| = 1: −sign(r − f)/numel per coordinate
    torch.testing.assert_close(student.net.value.grad, torch.tensor([-0.5, 0.5]), atol=1e-3, rtol=0)


class GaussFlow(nn.Module):
    """Exact velocity of N(mean, std² I) under rectified flow: x̂0 = m + (1−σ) s² (x − (1−σ) m) / ((1−σ)² s² + σ²)."""

    def __init__(self, mean: torch.Tensor, std: float) -> None:
        super().__init__()
        self.mean = nn.Parameter(mean.clone().float())
        self.log_std = nn.Parameter(torch.tensor(float(std)).log())

    def forward(self, x, sigma, cond, timestep_cond=None):
        a, s, var0 = (1 - sigma)[:, None], sigma[:, None].clamp_min(1e-4), self.log_std.exp() ** 2
        return (x - (self.mean + a * var0 / (a**2 * var0 + s**2) * (x - a * self.mean))) / s


class AffineGenerator(nn.Module):
    """A one-step generator x̂0 = a·x + b (as a flow network: v = (x − x̂0)/σ); from pure noise its samples are
    N(b, a² I)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(1.0)), nn.Parameter(torch.zeros(2))

    def forward(self, x, sigma, cond, timestep_cond=None):
        return (x - (self.a * x + self.b)) / sigma[:, None].clamp_min(1e-4)


def test_tdm_moves_a_gaussian_student_to_the_teachers_gaussian():
    """Known answer: the teacher is N(μ, 0.3² I), the student N(b, a² I) starts at N(0, I). The fake score is a
    Gaussian flow model too (a copy of the teacher) trained by the DSM loss, so both losses are exercised: in 100
    steps the student's mean and scale move most of the way to the teacher's and the fake follows the student.
    Checked to fail with r − f's sign flipped in the generator target, and with the fake's DSM target x_τ
    instead of the student's x̂0."""
    mu = torch.tensor([1.5, -1.0])
    teacher = FlowNet(GaussFlow(mu, 0.3).requires_grad_(False))
    cfg = TDMVideoConfig(student_steps=1, guidance=1.0, lr=5e-2, generator_lr_ratio=0.2, batch_size=256, steps=100)
    run = build_run(teacher, cfg, AffineGenerator(), GaussFlow(mu, 0.3))
    pool = PromptPool(cond=torch.zeros(1, 1), uncond=None, prompts=[""], latent_shape=(2,))
    distill_tdm(teacher, run, pool, cfg)
    student, fake = run.student.net, run.fake.net
    assert (student.b - mu).norm() < 0.4 * mu.norm(), student.b        # measured 0.51 of 1.80 → here < 0.72
    assert abs(student.a.item() - 0.3) < 0.5 * 0.7, student.a          # scale 1 → 0.40 (target 0.3)
    assert (fake.mean - student.b).norm() < 0.5 * mu.norm()            # the fake score tracks the student


def test_importance_weight_is_one_for_the_last_step():
    """The step to σ = 0 diffuses x̂0 itself: ñ = z, so w_IS = 1 (the weight only corrects mixed noise)."""
    x0, eps, z = (torch.randn(4, 2, generator=torch.Generator().manual_seed(i)) for i in range(3))
    _, mixed = diffuse_within(FLOW_PATH, x0, eps, torch.zeros(4), torch.full((4,), 0.3), z)
    torch.testing.assert_close(importance_weight(mixed, z), torch.ones(4))


# ----------------------------------------------------------------------------- resume on a tiny video DiT
class _CrashingPool:
    def __init__(self, pool: PromptPool, at_call: int) -> None:
        self.pool, self.calls, self.at = pool, 0, at_call

    def batch(self, size, gen):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.pool.batch(size, gen)


def _video_run(cfg: TDMVideoConfig):
    from fewstep.nodes.tdm.video import VideoFlowNet, trainable_copy, video_conditioning
    from fewstep.nodes.zoo.video.dit import PRESETS, VideoDiT

    torch.manual_seed(0)
    dit = VideoDiT(PRESETS["test"])
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    dit.eval().requires_grad_(False)
    teacher = FlowNet(VideoFlowNet(dit))
    ctx = torch.randn(3, 4, 384, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]).bool()
    pool = PromptPool(cond=video_conditioning(ctx, mask), uncond=video_conditioning(torch.zeros(1, 4, 384),
                                                                                     torch.tensor([[1, 1, 0, 0]])),
                      prompts=["a", "b", "c"], latent_shape=(2, 4, 16, 16))
    return teacher, build_run(teacher, cfg, trainable_copy(dit), trainable_copy(dit)), pool


def test_video_run_resumes_exactly_after_an_interrupt(tmp_path):
    cfg = TDMVideoConfig(steps=5, batch_size=2, student_steps=2, frames=2, lr=1e-3)
    teacher, full, pool = _video_run(cfg)
    ref = distill_tdm(teacher, full, pool, cfg)
    teacher, crashed, pool = _video_run(cfg)
    ckpt = Checkpointer(tmp_path / "run", every=2)
    with pytest.raises(KeyboardInterrupt):
        distill_tdm(teacher, crashed, _CrashingPool(pool, at_call=4), cfg, checkpointer=ckpt)
    assert Checkpointer.load(ckpt.latest()).step == 3
    teacher, resumed, pool = _video_run(cfg)
    state = distill_tdm(teacher, resumed, pool, cfg, checkpointer=ckpt)
    assert state.resumed_from == 3
    assert state.losses == pytest.approx(ref.losses, rel=1e-5)
    moved = [not torch.equal(a, b) for a, b in zip(full.pair.state_dict().values(),
                                                   _video_run(cfg)[1].pair.state_dict().values(), strict=True)]
    assert any(moved)                                                            # training changed the networks
    for (name, a), (_, b) in zip(full.pair.state_dict().items(), resumed.pair.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_video_config_errors():
    with pytest.raises(ValueError, match="unify off"):
        TDMVideoConfig(unify=True)
    with pytest.raises(ValueError, match="student_steps in 1..8"):
        TDMVideoConfig(student_steps=9)
    with pytest.raises(ValueError, match="no wider than"):
        TDMVideoConfig(student_steps=8, shift=20.0)
