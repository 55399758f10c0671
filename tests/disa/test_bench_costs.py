"""The DiSA table's cost column: head evaluations per image follow MAR's mask schedule."""

from __future__ import annotations

from fewstep.bench.disa.table import Row, head_cost, rows
from fewstep.nodes.disa.schedules import FixedHeadSteps, LinearHeadSteps


def test_head_cost_counts_every_token_once_per_step() -> None:
    evals, calls = head_cost(Row("c", 16, FixedHeadSteps(50)), 64)
    assert evals == 64 * 50 and calls == 16 * 50
    one_by_one, _ = head_cost(Row("b", 64, FixedHeadSteps(100)), 64)
    assert one_by_one == 6400


def test_disa_rows_spend_about_a_fifth_of_the_baseline_head_evaluations() -> None:
    evals, _ = head_cost(Row("d", 16, LinearHeadSteps(50, 5)), 64)
    base, _ = head_cost(rows(64)[0], 64)
    assert 4.0 < base / evals < 5.5          # the paper's "about 5x" regime at our L = 64
