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
    goal = result["goal_sequence"]
    assert goal["env"] == "goal_sequence" and len(goal["final_trial"]) == jobs.TINY.generations
    assert len(goal["rl2long"]) == jobs.TINY.generations * jobs.TINY.goal.num_trials and goal["oracle_trial_score"] > 0
    for name in ("table.md", "in_context.png", "sweep.png", "tsp.png", "in_weights.png", "goal_sequence.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| generation | final-trial score |" in (tmp_path / "table.md").read_text()
    assert "**In-context Goal Sequence**" in (tmp_path / "table.md").read_text()
    before = (tmp_path / "policy_ic.safetensors").stat().st_mtime_ns
    assert table.main(["--preset", "tiny", "--out", str(tmp_path), "--jobs"]) == 0
    assert (tmp_path / "policy_ic.safetensors").stat().st_mtime_ns == before


def test_tiny_bench_with_s5_agents_saves_and_reloads_them(tmp_path):
    from fewstep.nodes.culture.agent import PopulationS5ActorCritic

    assert table.main(["--preset", "tiny", "--core", "s5", "--out", str(tmp_path), "--jobs", "ic", "rl2",
                       "rl2long"]) == 0
    result = json.loads((tmp_path / "table.json").read_text())
    assert result["core"] == "s5" and len(result["in_context"]["final_trial"]) == jobs.TINY.generations
    assert json.loads((tmp_path / "train_ic.json").read_text())["agent"]["core"] == "s5"
    net = jobs.load_policy(tmp_path, "ic", "cpu").net
    assert isinstance(net, PopulationS5ActorCritic) and net.cfg.ssm_layers == jobs.TINY.ssm_layers
    assert "S5 agents" in (tmp_path / "table.md").read_text()


def _table(finals: list[float], rl2: list[float], oracle: float, sweep: list[float]) -> dict:
    return {"in_context": {"final_trial": finals, "rl2_at_same_trial": rl2, "rl2long_at_same_trial": rl2,
                           "oracle_trial_score": oracle},
            "sweep": [{"strength": s, "best_final": b, "oracle_trial_score": 1.0}
                      for s, b in zip((0.05, 0.5, 4.0), sweep, strict=True)],
            "tsp": {"final_tour": [3.0, 2.9, 2.7], "optimal_tour": 2.0},
            "in_weights": {"generation_best": [1.0, 5.0], "resets_best": [1.0, 2.0], "single_best": 4.0,
                           "baseline_factor": 5}}


def test_paper_side_by_side_judges_each_claim_from_the_tables(tmp_path):
    from fewstep.bench.culture import paper

    holds = _table([0.5, 1.0, 1.5, 1.6], [1.0, 1.0, 1.2, 1.1], 1.1, [1.0, 1.5, 0.8])
    fails = _table([1.0, 0.9, 0.8, 0.7], [1.0, 1.0, 1.2, 1.1], 1.1, [1.5, 1.0, 0.8])
    fails["tsp"]["final_tour"] = [3.0, 3.0, 2.95]                  # under the 5% bar
    fails["in_weights"]["generation_best"] = [1.0, 3.0]
    for label, t in (("demo", holds), ("demo_s5", fails)):
        (tmp_path / label).mkdir()
        (tmp_path / label / "table.json").write_text(json.dumps(t))
    text = paper.write(tmp_path, "demo")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "claim" not in line]
    assert len(rows) == len(paper.CLAIMS)
    for row in rows[:-2]:                                          # the GRU column holds, the S5 column does not
        gru, s5 = row.split(" | ")[2:4]
        assert gru.startswith("**yes**") and s5.startswith("no"), row
    assert rows[-2].split(" | ")[2].startswith("no")              # head resets: 2.0 < single 4.0 in both
    assert rows[-1].split(" | ")[2].startswith("not run")         # Goal Sequence generations
    from PIL import Image

    assert Image.open(tmp_path / "demo_paper" / "paper.png").size == (1280, 800)
