"""The integer program and the config builders (fewstep/nodes/mixdq/allocate.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fewstep.nodes.mixdq.allocate import (
    allocate_acts,
    allocate_weights,
    average_bits,
    solve_allocation,
    uniform_config,
)
from fewstep.nodes.mixdq.sensitivity import Sensitivity


def _brute_force(cost, bits, sizes, budget):
    best, best_cost = None, np.inf
    for choice in itertools.product(range(len(bits)), repeat=len(sizes)):
        spend = sum(bits[j] * s for j, s in zip(choice, sizes, strict=True))
        c = sum(cost[i][j] for i, j in enumerate(choice))
        if spend <= budget * sum(sizes) + 1e-9 and c < best_cost:
            best, best_cost = [bits[j] for j in choice], c
    return best


def test_small_problem_has_the_hand_computed_optimum():
    # 3 equal-size layers, budget 16/3 bits: exactly one layer can have 8 bits, the others 4.
    # Error drops 4->8 bits: layer0 by 1, layer1 by 5, layer2 by 2, so layer1 gets the 8 bits.
    cost = [[2.0, 1.0], [6.0, 1.0], [3.0, 1.0]]
    assert solve_allocation(np.array(cost), [4, 8], [1, 1, 1], 16 / 3) == [4, 8, 4]


def test_solver_matches_brute_force_on_random_problems():
    rng = np.random.default_rng(0)
    bits = [2, 4, 8]
    for _ in range(5):
        sizes = list(rng.integers(1, 10, 5))
        cost = np.sort(rng.random((5, 3)), axis=1)[:, ::-1]                 # more bits, less error
        budget = float(rng.uniform(2.5, 7.5))
        got = solve_allocation(cost, bits, sizes, budget)
        want = _brute_force(cost, bits, sizes, budget)
        got_cost = sum(cost[i][bits.index(b)] for i, b in enumerate(got))
        assert got_cost == pytest.approx(sum(cost[i][bits.index(b)] for i, b in enumerate(want)))
        assert sum(b * s for b, s in zip(got, sizes, strict=True)) <= budget * sum(sizes) + 1e-6


def test_budget_below_smallest_choice_is_an_error():
    with pytest.raises(ValueError, match="below the smallest choice"):
        solve_allocation(np.ones((2, 2)), [4, 8], [1, 1], 3.0)


def _sens() -> Sensitivity:
    s = Sensitivity()
    for i in range(6):
        name = f"l{i}"
        s.group[name] = "content" if i < 2 else "quality"
        s.w_size[name], s.a_size[name], s.absmax[name] = 100 * (i + 1), 10, 1.0
        s.w_sqnr[name] = {2: 5.0 + i, 4: 15.0 + i, 8: 40.0 + i}
        s.a_sqnr[name] = {4: 10.0 + 3 * i, 8: 30.0 + 3 * i}
        if i < 2:
            s.w_ssim[name] = {2: 0.5 + 0.2 * i, 4: 0.9, 8: 0.99}
            s.a_ssim[name] = {4: 0.8, 8: 0.98}
    return s


def test_weight_allocation_respects_budget_and_group_choices():
    s = _sens()
    alloc = allocate_weights(s, 5.0)
    assert set(alloc) == set(s.group)
    assert average_bits(alloc, s.w_size) <= 5.0 + 1e-9
    assert all(alloc[n] in (4, 8) for n, g in s.group.items() if g == "quality")   # quality: no 2-bit
    assert all(b == 8 for b in allocate_weights(s, 8.0).values())


def test_split_scan_keeps_the_candidate_the_evaluator_prefers():
    s = _sens()
    seen = []

    def evaluate(alloc):
        seen.append(alloc)
        return -average_bits({n: alloc[n] for n in ("l0", "l1")}, s.w_size)   # prefer many content bits
    best = allocate_weights(s, 5.0, evaluate=evaluate)
    candidates = list(seen)
    assert len(candidates) > 1 and best == min(candidates, key=evaluate)


def test_most_sensitive_activation_layers_stay_16_bit():
    s = _sens()
    alloc, keep = allocate_acts(s, 8.0, keep_fp_frac=0.2)          # ceil(0.2 * 6) = 2 layers
    assert keep == ["l0", "l1"]                                    # lowest SQNR at 8 bits
    assert alloc["l0"] == alloc["l1"] == 16 and all(alloc[f"l{i}"] == 8 for i in range(2, 6))


def test_uniform_config_and_metrics_round_trip():
    s = _sens()
    cfg = uniform_config(s, 4, 8)
    assert set(cfg["weight_bits"].values()) == {4} and cfg["keep_fp"] == [] and not cfg["bos_aware"]
    back = Sensitivity.from_metrics(s.to_metrics())
    assert back.w_sqnr == s.w_sqnr and back.a_ssim == s.a_ssim and back.group == s.group
    with pytest.raises(ValueError, match="MixDQCalibrate"):
        Sensitivity.from_metrics({"x": 1})


def test_fewer_bits_never_win_by_a_noisy_lower_score():
    # layer l0 measured 1 - SSIM = 1e-4 at 4 bits but 2e-4 at 8 bits (probe noise): with room for 8 bits
    # everywhere the allocation must not drop it to 4 bits.
    s = _sens()
    s.w_ssim["l0"] = {2: 0.9, 4: 0.9999, 8: 0.9998}
    bits = allocate_weights(s, 8.0)
    assert bits["l0"] == 8
    from fewstep.nodes.mixdq.allocate import monotone_costs

    c = monotone_costs(np.array([[0.5, 1e-4, 2e-4]]), [2, 4, 8])
    assert c.tolist() == [[0.5, 2e-4, 2e-4]]                     # non-increasing in bits


def test_content_layers_without_2_bit_choices():
    from fewstep.nodes.mixdq.allocate import mixdq_config

    s = _sens()
    def fewest_content_bits(bits):                                  # a split-scan pick that favours 2-bit content
        return bits["l0"] + bits["l1"]

    with_2 = mixdq_config(s, 4.0, 8.0, keep_fp_frac=0.0, evaluate=fewest_content_bits)
    without = mixdq_config(s, 4.0, 8.0, keep_fp_frac=0.0, content_bits=(4, 8), evaluate=fewest_content_bits)
    assert 2 in {with_2["weight_bits"][n] for n in ("l0", "l1")}    # the cheap 2-bit choice is taken...
    assert all(without["weight_bits"][n] in (4, 8) for n in ("l0", "l1"))   # ...and refused when off
    assert without["mean_weight_bits"] <= 4.0 + 1e-9
