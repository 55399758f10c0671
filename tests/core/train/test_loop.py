"""fewstep/nodes/core/train/loop.py: deterministic resume, checkpoint files, EMA, LoRA merge, progress metrics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewstep.app.api import ExecutionContext, InterruptedError_, reset_context, set_context
from fewstep.nodes.core.train.loop import (
    EMA,
    Checkpointer,
    FitSpec,
    add_lora,
    fit,
    merged_state_dict,
    step_generator,
    trainable_parameters,
)


def _problem(seed: int = 0):
    """A small regression whose every step draws its batch from the step generator."""
    torch.manual_seed(0)
    target = nn.Linear(4, 1)                   # the data: fixed
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def step_fn(step, gen):
        x = torch.randn(32, 4, generator=gen)
        with torch.no_grad():
            y = target(x)
        return (model(x) - y).pow(2).mean()

    return model, opt, step_fn


class Boom(Exception):
    pass


def _crash_at(step_fn, at):
    def wrapped(step, gen):
        if step == at:
            raise Boom(f"killed at {step}")
        return step_fn(step, gen)
    return wrapped


def test_resume_after_a_crash_repeats_the_uninterrupted_run(tmp_path):
    model, opt, step_fn = _problem()
    full = fit(model, opt, step_fn, FitSpec(total_steps=30, seed=7, lr_at=lambda s: 1e-2 * (1 - s / 40)))

    model2, opt2, step_fn2 = _problem()
    ckpt = Checkpointer(tmp_path / "run", every=10, keep=2)
    spec = FitSpec(total_steps=30, seed=7, lr_at=lambda s: 1e-2 * (1 - s / 40), checkpointer=ckpt)
    with pytest.raises(Boom):
        fit(model2, opt2, _crash_at(step_fn2, 17), spec)
    # the crash saved step 17 itself; a fresh process restores weights, optimizer and loss history
    assert ckpt.latest().name == "step_00000017.safetensors"
    model3, opt3, step_fn3 = _problem(seed=123)          # different init: everything must come from disk
    resumed = fit(model3, opt3, step_fn3, spec)
    assert resumed.resumed_from == 17
    assert resumed.losses == pytest.approx(full.losses, rel=1e-6, abs=1e-9)
    for a, b in zip(model.parameters(), model3.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_checkpoints_are_written_every_n_steps_and_pruned(tmp_path):
    model, opt, step_fn = _problem()
    ckpt = Checkpointer(tmp_path / "run", every=5, keep=2)
    fit(model, opt, step_fn, FitSpec(total_steps=20, checkpointer=ckpt))
    assert [p.name for p in ckpt.paths()] == ["step_00000015.safetensors", "step_00000020.safetensors"]
    loaded = Checkpointer.load(ckpt.latest())
    assert loaded.step == 20 and len(loaded.meta["losses"]) == 20
    assert set(loaded.prefixed("student")) == set(dict(model.named_parameters()))
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_resume_refuses_a_different_configuration(tmp_path):
    model, opt, step_fn = _problem()
    ckpt = Checkpointer(tmp_path / "run", every=5)
    fit(model, opt, step_fn, FitSpec(total_steps=5, checkpointer=ckpt, meta={"lr": 1}))
    with pytest.raises(ValueError, match="different run configuration"):
        fit(model, opt, step_fn, FitSpec(total_steps=10, checkpointer=ckpt, meta={"lr": 2}))


def test_step_generators_depend_only_on_seed_and_step():
    a = torch.randn(3, generator=step_generator(1, 5))
    assert torch.equal(a, torch.randn(3, generator=step_generator(1, 5)))
    assert not torch.equal(a, torch.randn(3, generator=step_generator(1, 6)))
    assert not torch.equal(a, torch.randn(3, generator=step_generator(2, 5)))


def test_ema_update_is_the_exponential_average():
    online, target = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        for p in target.parameters():
            p.zero_()
        for p in online.parameters():
            p.fill_(1.0)
    ema = EMA(online, target, decay=0.9)
    ema.update()
    ema.update()
    for p in target.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 1 - 0.9**2))
        assert not p.requires_grad


def test_lora_trains_only_adapters_and_merges_into_plain_weights():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    plain_keys = set(base.state_dict())
    x = torch.randn(5, 8)
    before = base(x).detach()
    model = add_lora(base, rank=2, target_modules=["0", "2"])
    names = list(trainable_parameters(model))
    assert names and all("lora_" in n for n in names)
    torch.testing.assert_close(model(x), before)             # LoRA B starts at zero
    opt = torch.optim.SGD(list(trainable_parameters(model).values()), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    tuned = model(x).detach()
    assert not torch.allclose(tuned, before)
    merged = merged_state_dict(model)
    assert set(merged) == plain_keys
    fresh = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    fresh.load_state_dict(merged)
    torch.testing.assert_close(fresh(x), tuned, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x), tuned)              # the adapters were unmerged again


def _context(events, interrupt_after=None):
    def report(value, total, preview=None, info=None):
        events.append(("progress", value, total))
        events.append(("metrics", info))

    ctx = ExecutionContext(prompt_id="p", node_id="1", class_type="T", prompt={}, extra_pnginfo={},
                           report=report, is_interrupted=lambda: interrupt_after is not None
                           and len([e for e in events if e[0] == "progress"]) >= interrupt_after)
    return ctx


def test_progress_carries_loss_and_lr_and_interrupt_saves_a_checkpoint(tmp_path):
    model, opt, step_fn = _problem()
    events = []
    token = set_context(_context(events, interrupt_after=4))
    ckpt = Checkpointer(tmp_path / "run", every=100)
    try:
        with pytest.raises(InterruptedError_):
            fit(model, opt, step_fn, FitSpec(total_steps=10, lr_at=lambda s: 0.5, checkpointer=ckpt))
    finally:
        reset_context(token)
    metrics = [e[1] for e in events if e[0] == "metrics"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert all(m["lr"] == 0.5 and m["loss"] > 0 for m in metrics)
    assert [e[1:] for e in events if e[0] == "progress"] == [(1, 10), (2, 10), (3, 10), (4, 10)]
    assert ckpt.latest().name == "step_00000004.safetensors"  # interrupted at step 4: saved there
