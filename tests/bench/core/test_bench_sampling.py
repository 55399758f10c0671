"""``fewstep bench sampling`` / ``bench server``: the bench's own plumbing (moved from tests/core/test_fastpath)."""

from __future__ import annotations

import pytest


def test_bench_reseeds_whatever_seed_node_the_default_graph_has():
    """The executor/server overhead jobs must really run (a graph whose seed never changes is served
    from the output cache: 0 ms of nodes, a meaningless overhead)."""
    from fewstep.bench.core.server import _default_prompt, _reseed

    prompt, ids = _default_prompt(3)
    assert ids
    _reseed(prompt, ids, 1234)
    seeds = [prompt[k]["inputs"].get("seed", prompt[k]["inputs"].get("noise_seed")) for k in ids]
    assert seeds == [1234] * len(ids)
    assert all(v["inputs"]["steps"] == 3 for v in prompt.values() if isinstance(v["inputs"].get("steps"), int))


@pytest.mark.slow                                           # ~40 s on the shared 2-core VM
def test_bench_quick_run_writes_rows_and_per_arch_steps(tmp_path, one_torch_thread):
    import json

    from fewstep.bench.core.sampling import main

    assert main(["--quick", "--archs", "sd15", "--batches", "1", "--arch-steps", "sd15=1,2", "--timed", "1",
                 "--no-diffusers", "--executor-jobs", "0", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench_sampling.json").read_text())
    assert [(r["batch"], r["steps"]) for r in result["rows"]] == [(1, 1), (1, 2)]
    assert all(r["ours_ms"] > 0 for r in result["rows"])
