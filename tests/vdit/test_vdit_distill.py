"""Efficient-vDiT stages 1 and 3 on tiny models: the MLCD target against a hand-computed jump, the consistency
sampler's boundaries, the KD loss (zero when nothing differs, gradients only into the student), resume."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fewstep.nodes.core.train.flow_consistency import FlowSegments, flow_jump, flow_teacher_states
from fewstep.nodes.core.train.loop import Checkpointer
from fewstep.nodes.vdit import train as vtrain
from fewstep.nodes.vdit.attention import with_layer_masks
from fewstep.nodes.vdit.distill import MLCDVideoLoss, SparseKDLoss, VideoBatch
from fewstep.nodes.vdit.sampling import consistency_generate
from fewstep.nodes.zoo.video.dit import PRESETS, VideoDiT
from fewstep.nodes.zoo.video.model import VideoModel

FRAMES = 4
SHAPE = (2, FRAMES, 4, 16, 16)


class ToyFlow(nn.Module):
    """v(x, t, ctx) = w x + (t / 1000) b + mean(ctx): a closed form for hand computations."""

    def __init__(self, w: float, b: float) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(torch.tensor(w)), nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        m = torch.ones(ctx.shape[:2], dtype=ctx.dtype) if mask is None else mask.to(ctx.dtype)
        pooled = (ctx * m[..., None]).sum((1, 2)) / (m.sum(1) * ctx.shape[2])     # masked mean (padding ignored)
        per = (t / 1000).view(-1, 1, 1, 1, 1) * self.b + pooled.view(-1, 1, 1, 1, 1)
        return self.w * x + per


def _batch(seed: int, latents: torch.Tensor | None = None, dim: int = 384) -> VideoBatch:
    g = torch.Generator().manual_seed(100)
    ctx = torch.randn(SHAPE[0], 3, dim, generator=g)
    return VideoBatch(ctx, torch.ones(SHAPE[0], 3, dtype=torch.bool), torch.randn(1, 2, dim, generator=g),
                      torch.ones(1, 2, dtype=torch.bool), SHAPE, torch.Generator().manual_seed(seed), latents)


def _v(net: ToyFlow, x: torch.Tensor, s: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    return net(x, s * 1000, ctx, None)


def test_flow_jump_is_ddim_euler_and_keeps_the_boundary() -> None:
    g = torch.Generator().manual_seed(0)
    x, x0 = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    s, s_to = torch.tensor([0.9, 0.5, 0.3]), torch.tensor([0.6, 0.0, 0.3])
    euler = x + (s_to - s)[:, None] * (x - x0) / s[:, None]
    assert torch.allclose(flow_jump(x, x0, s, s_to), euler, atol=1e-6)
    assert torch.equal(flow_jump(x, x0, s, s_to)[2], x[2])                    # sigma_to = sigma: x itself
    assert torch.equal(flow_jump(x, x0, torch.zeros(3), torch.zeros(3)), x)  # also at 0 (no 0/0)


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_mlcd_loss_equals_hand_computed_jumps(seed: int) -> None:
    segments = FlowSegments(base_steps=10, segments=2, shift=3.0)
    teacher, student, target = ToyFlow(0.3, 0.5).double(), ToyFlow(-0.2, 0.1).double(), ToyFlow(0.1, -0.4).double()
    latents = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)).double()
    batch = _batch(seed, latents)
    batch.context, batch.uncond = batch.context.double(), batch.uncond.double()
    loss = MLCDVideoLoss(segments, guidance=3.0, state_source="real")(student, batch, teacher=teacher, target=target)

    gen = torch.Generator().manual_seed(seed)                  # the same draws, in the loss's order
    k = torch.randint(0, 10, (2,), generator=gen)
    noise = torch.randn(SHAPE, generator=gen).double()
    grid = segments.grid().double()
    for i in range(2):
        sm, sn, slo = grid[k[i]], grid[k[i] + 1], grid[(k[i] // 5 + 1) * 5]
        ctx, unc = batch.context[i:i + 1], batch.uncond
        x_m = (1 - sm) * latents[i:i + 1] + sm * noise[i:i + 1]
        vt = _v(teacher, x_m, sm.view(1), unc) + 3.0 * (_v(teacher, x_m, sm.view(1), ctx) - _v(teacher, x_m, sm.view(1), unc))
        x_n = x_m + (sn - sm) * vt                                             # one guided teacher Euler step
        f_t = x_n - sn * _v(target, x_n, sn.view(1), ctx)                      # target's x0 at t_n
        tgt = x_n if sn == slo else (1 - slo) * f_t + slo * (x_n - (1 - sn) * f_t) / sn
        f_s = x_m - sm * _v(student, x_m, sm.view(1), ctx)
        pred = (1 - slo) * f_s + slo * (x_m - (1 - sm) * f_s) / sm
        assert float(loss[i].detach()) == pytest.approx(float((pred - tgt).pow(2).mean().detach()), rel=1e-5)


def test_segment_last_step_targets_the_teacher_step_and_states_follow_the_teacher() -> None:
    segments = FlowSegments(base_steps=10, segments=2, shift=1.0)
    assert torch.allclose(segments.boundaries(), torch.tensor([1.0, 0.5, 0.0]))
    gen = torch.Generator().manual_seed(0)
    k, sm, sn, slo = segments.draw(512, gen)
    last = (k % 5) == 4
    assert last.any() and torch.equal(sn[last], slo[last]) and bool((slo[~last] < sn[~last]).all())
    # data-free states: Euler from noise at stride 1 = the teacher's own grid walk
    teacher = ToyFlow(0.3, 0.5).double()
    ctx = torch.zeros(1, 1, 4, dtype=torch.float64)
    noise = torch.randn(1, 2, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = noise
    grid = segments.grid().double()
    for j in range(3):
        x = x + (grid[j + 1] - grid[j]) * _v(teacher, x, grid[j].view(1), ctx)
    got = flow_teacher_states(lambda y, s: _v(teacher, y, s, ctx), noise, torch.tensor([3]), grid, stride=1)
    assert torch.allclose(got, x)


class _StubVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))

    def decode(self, z: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=torch.zeros(z.shape[0], 3, 64, 64))


class _StubText:
    def encode_tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(len(texts[0]))
        return torch.randn(len(texts), 4, 384, generator=g), torch.ones(len(texts), 4)


def _video_model(seed: int = 0) -> VideoModel:
    torch.manual_seed(seed)
    dit = VideoDiT(PRESETS["test"]).eval()
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return VideoModel(dit.requires_grad_(False), _StubVAE(), 1.0, _StubText(), name="toy-video",
                      info={"segments": 5, "base_steps": 20, "shift": 3.0})


def test_consistency_sampler_visits_the_segment_boundaries_and_jumps_deterministically() -> None:
    model = _video_model()
    bounds = FlowSegments(20, 5, 3.0).boundaries()
    assert torch.allclose(bounds, FlowSegments(20, 5, 3.0).grid()[::4])          # boundaries are teacher grid points
    for steps, expected in ((5, bounds[:-1]), (1, bounds[:1])):
        seen: list[float] = []
        _, lat = consistency_generate(model, ["a red circle"], frames=FRAMES, steps=steps, seed=2,
                                      callback=lambda info, seen=seen: seen.append(float(info["sigma"])))
        assert seen == pytest.approx(expected.tolist())
    with pytest.raises(ValueError, match="1..5 steps"):
        consistency_generate(model, ["a red circle"], frames=FRAMES, steps=6)
    # jump mode = the student's x0, then the DDIM jump to the next boundary, by hand
    ctx, mask = model.encode_text(["a red circle"])
    x = torch.randn((1, FRAMES, 4, 16, 16), generator=torch.Generator().manual_seed(2))
    for s, s_to in zip(bounds[:-1], bounds[1:], strict=True):
        with torch.no_grad():
            x0 = x - s * model.dit(x, (s * 1000).view(1), ctx, mask)
        x = flow_jump(x, x0, s.view(1), s_to.view(1))
    _, lat = consistency_generate(model, ["a red circle"], frames=FRAMES, steps=5, seed=2)
    assert torch.allclose(lat, x, atol=1e-5)
    _, renoised = consistency_generate(model, ["a red circle"], frames=FRAMES, steps=5, mode="renoise", seed=2)
    assert not torch.allclose(renoised, x, atol=1e-3)


def _kd_batch(model: VideoModel) -> VideoBatch:
    ctx, mask = model.encode_text(["a red circle", "a blue square"])
    unc, umask = model.encode_text([""])
    return VideoBatch(ctx, mask, unc, umask, SHAPE, torch.Generator().manual_seed(5))


def test_kd_loss_is_zero_when_nothing_differs_and_positive_with_sparse_masks() -> None:
    model = _video_model()
    kd = SparseKDLoss(FlowSegments(20, 5, 3.0), attention_weight=1.0)
    dense_masks = with_layer_masks(model.dit, [FRAMES - 1] * 2)               # 3:1 keeps every tile
    zero = kd(dense_masks, _kd_batch(model), teacher=model.dit)
    assert float(zero.abs().max()) < 1e-10
    sparse = kd(with_layer_masks(model.dit, [0, 0]), _kd_batch(model), teacher=model.dit)
    assert bool((sparse > 1e-6).all())
    no_attention = SparseKDLoss(FlowSegments(20, 5, 3.0), attention_weight=0.0)(
        with_layer_masks(model.dit, [0, 0]), _kd_batch(model), teacher=model.dit)
    assert bool((sparse > no_attention).all())                               # the attention term adds


def test_kd_gradients_reach_only_the_student() -> None:
    model = _video_model()
    teacher = model.dit.requires_grad_(True)                                  # even a trainable teacher gets none
    student = with_layer_masks(teacher, [0, 1]).requires_grad_(True)
    for weight in (1.0, 0.0):
        student.zero_grad(set_to_none=True)
        SparseKDLoss(FlowSegments(20, 5, 3.0), attention_weight=weight)(student, _kd_batch(model), teacher=teacher).mean().backward()
        assert all(p.grad is None for p in teacher.parameters())
        grads = [p.grad for p in student.blocks[0].attn1.to_q.parameters()]
        assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    teacher.requires_grad_(False)


def _pool(model: VideoModel) -> vtrain.VideoPool:
    g = torch.Generator().manual_seed(3)
    return vtrain.VideoPool(torch.randn(6, 4, 384, generator=g), torch.ones(6, 4, dtype=torch.bool),
                            torch.randn(1, 2, 384, generator=g), torch.ones(1, 2, dtype=torch.bool), (FRAMES, 4, 16, 16))


def test_mlcd_and_kd_runs_resume_to_the_uninterrupted_result(tmp_path, monkeypatch) -> None:
    model = _video_model()
    cfg = vtrain.MLCDConfig(steps=4, batch_size=2, lr=1e-3, warmup=0, base_steps=20, segments=5, frames=FRAMES,
                            pool_clips=6, state_stride=4)
    whole, state = vtrain.train_mlcd(model, cfg, pool=_pool(model), checkpointer=Checkpointer(tmp_path / "a", every=1))
    assert state.resumed_from is None and len(state.losses) == 4
    assert whole.info["segments"] == 5 and whole.info["cfg_distilled"] == 4.0

    real_step_fn = vtrain._step_fn

    def interrupting(*args: object) -> object:
        inner = real_step_fn(*args)

        def run(step: int, gen: torch.Generator) -> torch.Tensor:
            if step == 2:
                raise KeyboardInterrupt
            return inner(step, gen)
        return run

    monkeypatch.setattr(vtrain, "_step_fn", interrupting)
    with pytest.raises(KeyboardInterrupt):
        vtrain.train_mlcd(model, cfg, pool=_pool(model), checkpointer=Checkpointer(tmp_path / "b", every=0))
    monkeypatch.setattr(vtrain, "_step_fn", real_step_fn)
    resumed, state_b = vtrain.train_mlcd(model, cfg, pool=_pool(model), checkpointer=Checkpointer(tmp_path / "b", every=0))
    assert state_b.resumed_from == 2 and state_b.losses == pytest.approx(state.losses)
    for (name, a), b in zip(whole.dit.state_dict().items(), resumed.dit.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-7), name
    assert not torch.allclose(whole.dit.blocks[0].attn1.to_q.weight, model.dit.blocks[0].attn1.to_q.weight)

    sparse = vtrain.student_model(whole, with_layer_masks(whole.dit, [0, 1]), "sparse", {"tile_masks": [0, 1]})
    kd_cfg = vtrain.KDConfig(steps=2, batch_size=2, base_steps=20, segments=5, frames=FRAMES, pool_clips=6)
    kd, kd_state = vtrain.train_kd(sparse, whole, kd_cfg, pool=_pool(model), checkpointer=Checkpointer(tmp_path / "c"))
    again, kd_again = vtrain.train_kd(sparse, whole, kd_cfg, pool=_pool(model), checkpointer=Checkpointer(tmp_path / "c"))
    assert kd_again.resumed_from == 2 and kd.info["tile_masks"] == [0, 1]
    assert torch.allclose(kd.dit.blocks[1].ff.net[2].weight, again.dit.blocks[1].ff.net[2].weight)


def test_student_files_round_trip_with_their_masks(tmp_path) -> None:
    model = _video_model()
    sparse = vtrain.student_model(model, with_layer_masks(model.dit, [1, None]), "kd",
                                  {"vdit_stage": "kd", "tile_masks": [1, None], "segments": 5})
    vtrain.save_student(sparse, tmp_path / "fewstep-vdit-kd-test.safetensors", {"note": "test"})
    assert vtrain.shipped_students(tmp_path) == ["fewstep-vdit-kd-test.safetensors"]
    loaded = vtrain.load_student("fewstep-vdit-kd-test.safetensors", model, root=tmp_path)
    assert loaded.info["tile_masks"] == [1, None] and loaded.info["segments"] == 5
    x = torch.randn(1, FRAMES, 4, 16, 16)
    ctx, mask = model.encode_text(["a"])
    with torch.no_grad():                       # fp16 storage: the same outputs within half precision
        assert torch.allclose(loaded.dit(x, torch.tensor([500.0]), ctx, mask), sparse.dit(x, torch.tensor([500.0]), ctx, mask),
                              atol=2e-2)
