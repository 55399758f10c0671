"""AccVideo's losses, discriminator, queues and trainer on tiny tensors."""

from __future__ import annotations

import torch
from torch import nn

from fewstep.nodes.accvideo.keypoints import key_timesteps
from fewstep.nodes.accvideo.loss import euler_step, trajectory_loss
from fewstep.nodes.accvideo.train import (
    AccVideoConfig,
    PointSource,
    build_run,
    make_step_fn,
    phase_of,
    train_accvideo,
)
from fewstep.nodes.core.train.loop import Checkpointer
from fewstep.nodes.core.video_sampling import sample_flow_euler

KEYS = key_timesteps()
SHAPE = (2, 4, 8, 8)                                                   # [T, C, h, w] of the tiny DiT


def straight_source(n: int, x0: torch.Tensor, seed: int = 0) -> PointSource:
    """Rectified-flow paths to one clip x0: point at t' is (1 - t') x0 + t' ε (each path a straight line)."""
    eps = torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))
    points = torch.stack([(1 - t) * x0 + t * eps for t in KEYS], dim=1)     # [n, 6, T, C, h, w]
    return PointSource(KEYS, torch.zeros(n, dtype=torch.long), points=points)


class StraightStudent(nn.Module):
    """The exact velocity of straight paths to x0: v(x, t') = (x - x0) / t' (a DiT's call signature)."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("x0", x0)
        self.bias = nn.Parameter(torch.zeros(()))                  # something for the optimizer to hold

    def forward(self, x, timestep, context, mask):
        t = (timestep / 1000).reshape(-1, *[1] * (x.ndim - 1))
        return (x - self.x0) / t + self.bias


class KeyTable(nn.Module):
    """A learnable velocity per key timestep (a student that can fit one trajectory exactly)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(len(KEYS), *SHAPE))

    def forward(self, x, timestep, context, mask):
        row = (KEYS[None] * 1000 - timestep.reshape(-1, 1).float()).abs().argmin(1)
        return self.table[row]


def _ctx(p: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(p, 3, 384), torch.ones(p, 3, dtype=torch.bool)


def test_traj_loss_is_zero_for_the_exact_secant_velocity() -> None:
    x_hi, v = torch.randn(2, *SHAPE), torch.randn(2, *SHAPE)
    x_lo = euler_step(x_hi, v, 0.9130, 0.8235)
    assert float(trajectory_loss(v, x_hi, x_lo, 0.9130, 0.8235)) < 1e-10
    assert float(trajectory_loss(v + 0.1, x_hi, x_lo, 0.9130, 0.8235)) > 5e-3
    # through the trainer's step: on straight paths the exact velocity gives L_traj = 0 at every key
    x0 = torch.randn(*SHAPE)
    cfg = AccVideoConfig(steps=1, batch_size=3, adversarial="off")
    run = build_run(StraightStudent(x0), *_ctx(), cfg, m=5)
    step = make_step_fn(run, straight_source(8, x0), cfg)
    losses = [float(step(n, torch.Generator().manual_seed(n)).detach()) for n in range(5)]
    assert max(losses) < 1e-9


def test_trained_student_steps_land_on_the_next_key_point(tiny_model) -> None:
    torch.manual_seed(0)
    source = straight_source(1, torch.randn(*SHAPE), seed=3)        # one trajectory: exactly learnable
    source.points[0, 2:5] += 0.05 * torch.randn(3, *SHAPE)          # bent: not a straight path any more
    cfg = AccVideoConfig(steps=600, batch_size=1, lr=0.03, warmup=0, grad_clip=0.0, adversarial="off")
    student, state = train_accvideo(KeyTable(), source, *_ctx(), cfg)
    assert max(state.losses[-5:]) < 1e-4 < 1.0 < state.losses[0]      # every key fitted (Adam noise ~1e-5)
    pts = source.points[0]
    for j in range(5):                                              # sampling order: position j -> j + 1
        t_hi, t_lo = float(KEYS[j]), float(KEYS[j + 1])
        v = student(pts[j][None], torch.tensor([t_hi * 1000]), None, None)[0]
        assert torch.allclose(euler_step(pts[j], v, t_hi, t_lo), pts[j + 1], atol=5e-3)   # untrained: ~1
    # and the 5-step key-point sampler from the noise point returns the trajectory's clip
    den = lambda x, s, c: x - s * student(x, (s * 1000).reshape(1), None, None)  # noqa: E731  x0 = x - σ v
    assert torch.allclose(sample_flow_euler(den, pts[0][None], KEYS)[0], pts[-1], atol=1e-2)


def test_heads_get_gradients_and_the_teacher_stays_frozen(tiny_model) -> None:
    cfg = AccVideoConfig(steps=1, batch_size=2, adversarial="per_timestep")
    source = straight_source(4, torch.randn(*SHAPE))
    run = build_run(tiny_model.dit, *_ctx(), cfg, m=5)
    step = make_step_fn(run, source, cfg)
    assert phase_of(1, 5, cfg) == (0, 4, "adv")
    step(1, torch.Generator().manual_seed(1)).backward()            # the adversarial update of key k = 4
    heads = run.pair.disc.heads
    assert len(heads) == 5
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads[4].parameters())
    assert all(p.grad is None for h in heads[:4] for p in h.parameters())
    assert all(not p.requires_grad and p.grad is None for p in run.teacher.dit.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in run.pair.student.parameters())
    # the head's gradient is that of its own loss only (real = 1, generated = 0), not the student's -log D(gen)
    shared = AccVideoConfig(steps=1, batch_size=2, adversarial="shared")
    assert len(build_run(tiny_model.dit, *_ctx(), shared, m=5).pair.disc.heads) == 1


def test_queues_carry_one_student_step_per_key(tiny_model) -> None:
    x0 = torch.randn(*SHAPE)
    cfg = AccVideoConfig(steps=1, batch_size=2, adversarial="per_timestep")
    run = build_run(tiny_model.dit, *_ctx(), cfg, m=5)
    run.pair.student = StraightStudent(x0)                          # exact velocity: a step lands on the path
    step = make_step_fn(run, straight_source(4, x0), cfg)
    noise = None
    for n in range(10):                                             # one iteration: (traj, adv) for k = 4 ... 0
        step(n, torch.Generator().manual_seed(n))
        it, k, phase = phase_of(n, 5, cfg)
        if phase == "adv":
            assert len(run.queues.queues[k]) == 1 and len(run.queues.queues[k + 1]) == 0
            x, ids = run.queues.queues[k][0]
            assert x.shape == (2, *SHAPE) and ids.shape == (2,)
            if k == 4:                                              # noise = (x - (1 - t) x0) / t at t'_4
                t = float(KEYS[1])
                noise = (x - (1 - t) * x0) / t
            t = float(KEYS[5 - k])
            assert torch.allclose(x, (1 - t) * x0 + t * noise, atol=1e-5)   # the latent sits at t'_k
    assert [phase_of(n, 5, cfg)[1:] for n in (0, 1, 8, 9)] == [(4, "traj"), (4, "adv"), (0, "traj"), (0, "adv")]


def test_resume_continues_at_the_step(tiny_model, tmp_path) -> None:
    source = straight_source(4, torch.randn(*SHAPE))
    ctx = _ctx()
    cfg = AccVideoConfig(steps=2, batch_size=2, adversarial="shared", warmup=0)
    whole, state = train_accvideo(tiny_model.dit, source, *ctx, cfg, checkpointer=Checkpointer(tmp_path / "a", every=1))
    assert state.step == 20
    first, s1 = train_accvideo(tiny_model.dit, source, *ctx, AccVideoConfig(**{**cfg.__dict__, "steps": 1}),
                               checkpointer=Checkpointer(tmp_path / "b", every=1))
    assert s1.step == 10
    resumed, s2 = train_accvideo(tiny_model.dit, source, *ctx, cfg, checkpointer=Checkpointer(tmp_path / "b", every=1))
    assert s2.resumed_from == 10 and s2.step == 20
    assert s2.losses == state.losses
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
