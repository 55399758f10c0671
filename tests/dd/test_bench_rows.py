"""The DD table's rows run end to end on a tiny random teacher (the bench module, no judging networks)."""

from __future__ import annotations

import torch

from fewstep.bench.dd.evaluate import EvalSetup, generate_rows, teacher_nll
from fewstep.nodes.dd.flow import flow_space
from fewstep.nodes.dd.generator import DDGenerator
from fewstep.nodes.zoo.ar.models import ARConfig, ARTransformer


def test_every_row_gives_tokens_calls_and_times() -> None:
    torch.manual_seed(0)
    teacher = ARTransformer(ARConfig(vocab_size=12, seq_len=16, dim=32, n_layers=1, n_heads=2, cond_dim=8)).eval()
    dd = DDGenerator.from_teacher(teacher, flow_space(torch.randn(12, 4))).eval()
    setup = EvalSetup(cfg=2.0, t_list=(0, 6), teacher_prefix=2, marginal_samples=3, flow_steps=8)
    tokens, rows = generate_rows(teacher, dd, torch.randn(5, 8), setup, "cpu", log=lambda s: None)
    names = [r["method"] for r in rows]
    assert names[:3] == ["teacher (16 steps)", "teacher flow map (16 steps)", "DD 1-step"]
    assert {"marginals (1 step)", "parallel decoding (1 step)", "DD + teacher (2..6)"} <= set(names)
    calls = {r["method"]: r["calls"] for r in rows}
    assert calls["DD 1-step"] == 1 and calls["DD 2-step"] == 2 and calls["DD + teacher (2..6)"] == 1 + 4 + 1
    assert all(t.shape == (5, 16) for t in tokens.values())
    assert all(r["ms_per_image"] > 0 and r["teacher_nll"] > 0 for r in rows)


def test_teacher_nll_is_lower_for_the_teachers_greedy_tokens() -> None:
    torch.manual_seed(1)
    teacher = ARTransformer(ARConfig(vocab_size=12, seq_len=16, dim=32, n_layers=1, n_heads=2, cond_dim=8)).eval()
    with torch.no_grad():
        teacher.output.weight.mul_(50)
    from fewstep.nodes.core.ar.sampling import sample_ar

    cond = torch.randn(16, 8)
    greedy = sample_ar(teacher, cond, temperature=0.0)
    uniform = torch.randint(0, 12, greedy.shape, generator=torch.Generator().manual_seed(0))
    assert teacher_nll(teacher, greedy, cond, 1.0) < teacher_nll(teacher, uniform, cond, 1.0)
