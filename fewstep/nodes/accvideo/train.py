"""AccVideo's student training on the shared trainer (``nodes.core.train.loop.fit``: checkpoints, resume, live
loss), following the paper's Alg. 1.

One paper iteration walks the key timesteps k = m-1 ... 0 and, per k, makes

1. one student update with L_traj on a batch of SynVid key-point pairs (t'_{k+1} -> t'_k), then
2. (adversarial arms) one update of the student and of head H_k with λ_adv · L_adv, the generated batch being
   one student Euler step from the batch popped off ``Q_{k+1}`` (pushed to ``Q_k``).

Each update is one ``fit`` step, so an iteration is m steps (traj only) or 2m steps, and fit's step n maps to
(iteration n // per_iter, key, phase). Every random draw of step n comes from ``step_generator(seed, n)``; the
iteration's noise batch (``Q_m``) and its prompts from a generator of (seed, iteration). Checkpoints are written
on iteration boundaries, where the queues are empty again, so a resumed run repeats an uninterrupted one
exactly; a run stopped inside an iteration (time cap, interrupt) resumes with ``Q_{k+1}`` rebuilt by a no-grad
rollout of the current student from that iteration's noise.

Arms (``adversarial`` x ``data_points``): ``off`` (L_traj only), ``shared`` (one head for every key),
``per_timestep`` (one head per key, the paper's); ``trajectory`` (SynVid points, the paper's) or
``forward_diffused`` (``(1 - t') x0 + t' ε`` of real clips at the same key timesteps: the "useless data points"
of paper §3, for which the secant is simply ε - x0).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewstep.nodes.accvideo.loss import (
    Discriminator,
    LatentQueues,
    TeacherFeatures,
    adversarial_losses,
    euler_step,
    secant_velocity,
)
from fewstep.nodes.core.train.loop import (
    Checkpointer,
    FitSpec,
    TrainState,
    config_fingerprint,
    fit,
    step_generator,
)

log = logging.getLogger("fewstep.accvideo")

ADVERSARIAL = ("off", "shared", "per_timestep")
DATA_POINTS = ("trajectory", "forward_diffused")
QUEUE_SALT = 0x51_A3C0  # the queue-noise stream of an iteration is (seed + salt, iteration)


@dataclass(frozen=True)
class AccVideoConfig:
    """One AccVideo run.

    Args:
        steps: paper iterations (each m or 2m optimizer updates, see the module docstring).
        batch_size: clips per update.  lr: AdamW learning rate of the student (paper: 5e-6 on HunyuanVideo).
        head_lr_ratio: the heads' lr = lr x this (they start from scratch, the student from the teacher).
        warmup: linear warm-up in optimizer updates.  grad_clip: global grad-norm clip per update.
        adversarial / data_points: the arm (module docstring).  adv_weight: λ_adv (paper: 0.1).
        head_width: channels of each conv head.  queue_capacity: batches each queue holds.
        seed: every draw of update n comes from (seed, n).
    """

    steps: int = 100
    batch_size: int = 16
    lr: float = 1e-4
    head_lr_ratio: float = 10.0
    warmup: int = 20
    grad_clip: float = 1.0
    adversarial: str = "per_timestep"
    data_points: str = "trajectory"
    adv_weight: float = 0.1
    head_width: int = 32
    queue_capacity: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.adversarial not in ADVERSARIAL:
            raise ValueError(f"adversarial must be one of {ADVERSARIAL}, got {self.adversarial!r}")
        if self.data_points not in DATA_POINTS:
            raise ValueError(f"data_points must be one of {DATA_POINTS}, got {self.data_points!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")

    def updates_per_iteration(self, m: int) -> int:
        return m if self.adversarial == "off" else 2 * m

    def fingerprint(self) -> str:
        """Names the run's settings; ``steps`` is left out so a longer run of the same settings resumes."""
        return config_fingerprint({k: v for k, v in asdict(self).items() if k != "steps"})

    def lr_at(self, update: int) -> float:
        return self.lr * min(1.0, (update + 1) / self.warmup) if self.warmup else self.lr


# Named presets (style: edm2's table); the CPU demo is what the shipped student and the graph use.
PRESETS: dict[str, AccVideoConfig] = {
    "cpu-demo": AccVideoConfig(steps=6, batch_size=4),
    "cpu-bench": AccVideoConfig(steps=60, batch_size=16),
    "gpu": AccVideoConfig(steps=1200, batch_size=32, lr=5e-5, warmup=100),
}


def preset(name: str, **changes: Any) -> AccVideoConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown AccVideo preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **changes)


def phase_of(update: int, m: int, cfg: AccVideoConfig) -> tuple[int, int, str]:
    """(iteration, key k, "traj" | "adv") of optimizer update ``update`` (k runs m-1 ... 0 in an iteration)."""
    per = cfg.updates_per_iteration(m)
    it, j = divmod(update, per)
    if cfg.adversarial == "off":
        return it, m - 1 - j, "traj"
    return it, m - 1 - j // 2, "traj" if j % 2 == 0 else "adv"


class ScaledAdamW(torch.optim.AdamW):
    """AdamW whose parameter groups may carry ``lr_scale`` (the trainer sets one lr for all groups; the heads'
    group runs at lr x scale). The key lives in the param groups, so it is checkpointed with the optimizer."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        base = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, base, strict=True):
                group["lr"] = lr


class AccVideoPair(nn.Module):
    """What a run trains: the student DiT and (adversarial arms) the discriminator heads."""

    def __init__(self, student: nn.Module, disc: Discriminator | None) -> None:
        super().__init__()
        self.student = student
        self.disc = disc


@dataclass
class PointSource:
    """Training points at the key timesteps, in sampling order ``[N, m + 1, T, C, h, w]`` plus prompt ids ``[N]``.

    ``trajectory``: SynVid's stored key points. ``forward_diffused``: ``clean`` ``[N, T, C, h, w]`` real clips,
    each point ``(1 - t') x0 + t' ε`` with one fresh ε per sample (shared by its key points)."""

    keys: Tensor
    prompt_ids: Tensor
    points: Tensor | None = None
    clean: Tensor | None = None

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def draw(self, b: int, positions: tuple[int, ...], gen: torch.Generator) -> tuple[list[Tensor], Tensor]:
        """``b`` random samples: their points at sampling-order ``positions`` and their prompt ids."""
        idx = torch.randint(0, len(self), (b,), generator=gen)
        if self.points is not None:
            return [self.points[idx, p] for p in positions], self.prompt_ids[idx]
        x0 = self.clean[idx]
        eps = torch.randn(x0.shape, generator=gen)
        return [(1 - self.keys[p]) * x0 + self.keys[p] * eps for p in positions], self.prompt_ids[idx]


@dataclass
class AccVideoRun:
    """The student, heads, teacher features, optimizer and queues of one run."""

    pair: AccVideoPair
    teacher: TeacherFeatures | None
    optimizer: ScaledAdamW
    queues: LatentQueues
    context: Tensor
    mask: Tensor


def build_run(teacher_dit: nn.Module, context: Tensor, mask: Tensor, cfg: AccVideoConfig, m: int) -> AccVideoRun:
    """Student = fp32 copy of the teacher (paper: initialised from HunyuanVideo); heads per the arm; AdamW."""
    student = copy.deepcopy(teacher_dit).float().train().requires_grad_(True)
    disc = None
    if cfg.adversarial != "off":
        dcfg = teacher_dit.config
        with torch.random.fork_rng(devices=[]):             # the heads' initial weights: a function of the seed
            torch.manual_seed(cfg.seed)
            disc = Discriminator(dcfg.dim, dcfg.latent_size // dcfg.patch, m, cfg.adversarial, cfg.head_width)
    pair = AccVideoPair(student, disc)
    groups = [{"params": list(student.parameters()), "lr_scale": 1.0}]
    if disc is not None:
        groups.append({"params": list(disc.parameters()), "lr_scale": cfg.head_lr_ratio})
    opt = ScaledAdamW(groups, lr=cfg.lr, weight_decay=0.0)
    frozen = copy.deepcopy(teacher_dit).float() if disc is not None else None
    feats = TeacherFeatures(frozen, context, mask) if frozen is not None else None
    return AccVideoRun(pair, feats, opt, LatentQueues(m, cfg.queue_capacity), context, mask)


def _velocity(run: AccVideoRun, x: Tensor, t: float, prompt_ids: Tensor) -> Tensor:
    ts = torch.full((x.shape[0],), t * 1000.0, device=x.device)
    return run.pair.student(x, ts, run.context[prompt_ids], run.mask[prompt_ids])


def _iteration_noise(cfg: AccVideoConfig, it: int, shape: tuple[int, ...], n_prompts: int) -> tuple[Tensor, Tensor]:
    gen = step_generator(cfg.seed + QUEUE_SALT, it)
    ids = torch.randint(0, n_prompts, (cfg.batch_size,), generator=gen)
    return torch.randn(cfg.batch_size, *shape, generator=gen), ids


def _pop_generated(run: AccVideoRun, cfg: AccVideoConfig, it: int, k: int, keys: Tensor,
                   shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``l^gen_{t'_{k+1}}`` from ``Q_{k+1}``: fresh noise for k + 1 = m; else the queue, or (after a resume
    inside an iteration) a no-grad rollout of the current student from the iteration's noise."""
    m = len(keys) - 1
    if k + 1 == m:
        run.queues.push(m, *_iteration_noise(cfg, it, shape, len(run.context)))
    got = run.queues.pop(k + 1)
    if got is not None:
        return got
    x, ids = _iteration_noise(cfg, it, shape, len(run.context))
    with torch.no_grad():
        for p in range(0, m - (k + 1)):                    # sampling positions: t'_m ... t'_{k+2} -> next
            x = euler_step(x, _velocity(run, x, float(keys[p]), ids), float(keys[p]), float(keys[p + 1]))
    return x, ids


def make_step_fn(run: AccVideoRun, source: PointSource, cfg: AccVideoConfig,
                 log_to: list[dict[str, float]] | None = None) -> Callable[[int, torch.Generator], Tensor]:
    """``fit``'s step: the update ``phase_of(n)`` asks for, returning the loss to back-propagate."""
    keys = source.keys
    m = len(keys) - 1
    shape = tuple((source.points[0, 0] if source.points is not None else source.clean[0]).shape)

    def step(n: int, gen: torch.Generator) -> Tensor:
        it, k, phase = phase_of(n, m, cfg)
        t_hi, t_lo = float(keys[m - (k + 1)]), float(keys[m - k])
        if phase == "traj":                                 # L_traj on (t'_{k+1} -> t'_k), paper eq. 5
            (x_hi, x_lo), ids = source.draw(cfg.batch_size, (m - (k + 1), m - k), gen)
            loss = F.mse_loss(_velocity(run, x_hi, t_hi, ids), secant_velocity(x_hi, x_lo, t_hi, t_lo))
            parts = {"traj": float(loss.detach())}
        else:                                               # λ_adv L_adv at t'_k, paper eq. 6-7
            x_in, gen_ids = _pop_generated(run, cfg, it, k, keys, shape)
            x_gen = euler_step(x_in, _velocity(run, x_in, t_hi, gen_ids), t_hi, t_lo)   # one student step
            run.queues.push(k, x_gen, gen_ids)
            (x_real,), real_ids = source.draw(cfg.batch_size, (m - k,), gen)
            with torch.no_grad():
                f_real = run.teacher(x_real, t_lo, real_ids)
            head_loss, student_loss = adversarial_losses(run.pair.disc.head(k), f_real, run.teacher(x_gen, t_lo, gen_ids))
            loss = cfg.adv_weight * (head_loss + student_loss)
            parts = {"head": float(head_loss.detach()), "gen": float(student_loss.detach())}
        if log_to is not None:
            log_to.append({"update": n, "k": k, "phase": phase, **parts})
        return loss
    return step


def train_accvideo(teacher_dit: nn.Module, source: PointSource, context: Tensor, mask: Tensor, cfg: AccVideoConfig, *,
                   checkpointer: Checkpointer | None = None, max_seconds: float | None = None,
                   meta: dict[str, Any] | None = None, log_to: list[dict[str, float]] | None = None,
                   preview_fn: Callable[[int], Any] | None = None, preview_every: int = 0,
                   device: str = "cpu") -> tuple[nn.Module, TrainState]:
    """Train an AccVideo student from ``teacher_dit`` on ``source``; returns (student DiT in eval mode, state).

    ``context`` / ``mask``: the prompt table ``[P, L, 384]`` / ``[P, L]`` that the source's prompt ids index.
    ``checkpointer.every`` counts paper iterations (multiplied here into optimizer updates)."""
    m = len(source.keys) - 1
    run = build_run(teacher_dit, context.to(device), mask.to(device), cfg, m)
    run.pair.to(device)
    per = cfg.updates_per_iteration(m)
    if checkpointer is not None:
        checkpointer = Checkpointer(checkpointer.folder, every=checkpointer.every * per, keep=checkpointer.keep)
    spec = FitSpec(total_steps=cfg.steps * per, seed=cfg.seed, lr_at=cfg.lr_at, grad_clip=cfg.grad_clip,
                   device=device, checkpointer=checkpointer, preview_every=preview_every * per,
                   meta={"accvideo": cfg.fingerprint(), **(meta or {})}, max_seconds=max_seconds)
    state = fit(run.pair, run.optimizer, make_step_fn(run, source, cfg, log_to), spec, preview_fn=preview_fn)
    if not math.isfinite(state.losses[-1] if state.losses else 0.0):
        raise FloatingPointError("AccVideo training diverged")
    return run.pair.student.eval().requires_grad_(False), state
