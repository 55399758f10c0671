"""The example graphs run through the engine at test size (seconds on CPU): metrics, the plot, checkpoints in
the models folder, and a resumed re-run that trains nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fewstep.app.api import Paths

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"total_steps": 128, "num_envs": 8, "num_steps": 8, "hidden": 8, "embed": 8, "minibatches": 2,
         "checkpoint_every": 1}


def _executor(tmp_path: Path):
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry

    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in", user_dir=tmp_path / "user")
    return Executor(load_registry(), CacheSet(), paths)


def _graph(name: str) -> dict[str, Any]:
    graph = json.loads((ROOT / "graphs" / f"{name}.json").read_text())
    for node in graph.values():
        if node["class_type"] == "CultureTrainInContext":
            node["inputs"] |= SMALL
        if node["class_type"] == "CultureInContextGenerations":
            node["inputs"] |= {"generations": 2, "tasks": 4, "population": 2}
        if node["class_type"] == "CultureInWeights":
            node["inputs"] |= SMALL | {"generations": 2, "population": 2, "baseline_factor": 2, "total_steps": 64}
            del node["inputs"]["checkpoint_every"]
        if node["class_type"] == "CultureEnvironment":
            node["inputs"] |= {"trial_length": 4}
    return graph


def _run(executor, graph: dict, pid: str) -> tuple[Any, list[dict]]:
    events: list = []
    result = executor.execute(graph, prompt_id=pid, emit=lambda kind, data: events.append((kind, data)))
    return result, [d for kind, d in events if kind == "progress" and d["node"] in ("2", "3")]


def test_in_context_graph_plots_generations_and_resumes(tmp_path):
    result, trained = _run(_executor(tmp_path), _graph("culture_in_context"), "a")
    assert result.status == "success", result.error
    metrics = result.outputs["4"]["metrics"][0]
    assert {"gen0_final", "gen1_final", "oracle", "rl2_trial3", "rl2_trial7"} <= set(metrics)
    assert 0.0 <= metrics["gen1_final"] <= 4.0
    assert len(result.outputs["5"]["images"]) == 1                       # the plot reached PreviewImage
    assert {d["value"] for d in trained} == {1, 2} and all("loss" in d and "value_loss" in d for d in trained)
    runs = tmp_path / "models" / "checkpoints" / "culture"
    assert len(list((runs / "train").iterdir())) == 2 and len(list((runs / "generations").iterdir())) == 1
    again, trained_again = _run(_executor(tmp_path), _graph("culture_in_context"), "b")
    assert again.status == "success" and trained_again == []              # resumed from the checkpoints
    assert again.outputs["4"]["metrics"][0]["gen1_final"] == metrics["gen1_final"]


def test_tsp_and_in_weights_graphs_run(tmp_path):
    executor = _executor(tmp_path)
    tsp, _ = _run(executor, _graph("culture_tsp"), "t")
    assert tsp.status == "success", tsp.error
    assert {"gen0_tour", "gen1_tour", "oracle"} <= set(tsp.outputs["4"]["metrics"][0])
    iw, _ = _run(executor, _graph("culture_in_weights"), "w")
    assert iw.status == "success", iw.error
    m = iw.outputs["2"]["metrics"][0]
    assert {"gen0_best", "gen1_best", "single_2x_best"} <= set(m) and len(iw.outputs["5"]["images"]) == 1


def test_bad_environment_input_is_refused_before_running(tmp_path):
    graph = _graph("culture_in_context")
    graph["1"]["inputs"]["environment"] = "chess"
    result, _ = _run(_executor(tmp_path), graph, "x")
    assert result.status == "error" and "chess" in json.dumps(result.error, default=str)


def test_core_widget_trains_s5_agents_in_their_own_run_folders(tmp_path):
    graph = _graph("culture_in_context")
    for node in graph.values():
        if node["class_type"] == "CultureTrainInContext":
            node["inputs"] |= {"core": "s5", "ssm_layers": 1}
    result, _ = _run(_executor(tmp_path), graph, "s")
    assert result.status == "success", result.error
    assert {"gen0_final", "gen1_final", "rl2_trial7"} <= set(result.outputs["4"]["metrics"][0])
    gru, _ = _run(_executor(tmp_path), _graph("culture_in_context"), "g")      # same settings, GRU: trains anew
    assert gru.status == "success", gru.error
    runs = tmp_path / "models" / "checkpoints" / "culture" / "train"
    assert len(list(runs.iterdir())) == 4                                       # 2 S5 learners + 2 GRU learners
    from safetensors import safe_open

    def has_s5(folder: Path) -> bool:
        with safe_open(str(sorted(folder.glob("step_*.safetensors"))[-1]), "pt") as f:
            return "net.blocks.0.ssm.lam_re" in set(f.keys())

    assert sorted(has_s5(p) for p in runs.iterdir()) == [False, False, True, True]
