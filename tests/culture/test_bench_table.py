"""`fewstep bench culture` end to end at the tiny preset: every job trains, the evaluation writes the table,
the JSON and the plots, and a second call reuses the trained policies."""

from __future__ import annotations

import json

from fewstep.bench.culture import jobs, table


def test_tiny_bench_writes_every_table_and_plot(tmp_path):
    assert table.main(["--preset", "tiny", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "table.json").read_text())
    ic = result["in_context"]
    assert len(ic["final_trial"]) == jobs.TINY.generations and len(ic["rl2long"]) == 2 * jobs.TINY.memseq.num_trials
    assert [row["strength"] for row in result["sweep"]] == [0.05, 0.5]
    assert len(result["tsp"]["final_tour"]) == 2 and result["tsp"]["optimal_tour"] > 0
    assert len(result["in_weights"]["generation_best"]) == 2
    for name in ("table.md", "in_context.png", "sweep.png", "tsp.png", "in_weights.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| generation | final-trial score |" in (tmp_path / "table.md").read_text()
    before = (tmp_path / "policy_ic.safetensors").stat().st_mtime_ns
    assert table.main(["--preset", "tiny", "--out", str(tmp_path), "--jobs"]) == 0
    assert (tmp_path / "policy_ic.safetensors").stat().st_mtime_ns == before
