"""`fewstep run` exit codes and output, `fewstep nodes`, `--set` type checks."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

from engine_helpers import n

from fewstep.app.cli import COMMANDS_GROUP, main

PACKS = Path(__file__).parent / "packs"


def write_graph(tmp_path: Path, graph: dict) -> Path:
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph))
    return path


def cli(tmp_path, *args):
    return main([*args, "--home", str(tmp_path), "--custom-nodes", str(PACKS), "--no-builtin-nodes"])


GOOD = {"1": n("StubInt", value=4), "2": n("StubSave", value=["1", 0], prefix="cli")}


def test_run_success_prints_output_paths(tmp_path, capsys):
    code = cli(tmp_path, "run", str(write_graph(tmp_path, GOOD)), "--out", str(tmp_path / "o"))
    out = capsys.readouterr().out.split()
    assert code == 0 and out == [str((tmp_path / "o" / "cli_4.txt").resolve())]
    assert Path(out[0]).read_text() == "4"


def test_run_set_overrides_are_typed(tmp_path, capsys):
    graph = write_graph(tmp_path, GOOD)
    assert cli(tmp_path, "run", str(graph), "--set", "1.value=9") == 0
    assert capsys.readouterr().out.strip().endswith("cli_9.txt")
    assert cli(tmp_path, "run", str(graph), "--set", "1.value=nine") == 2
    assert "INT expected" in capsys.readouterr().err
    assert cli(tmp_path, "run", str(graph), "--set", "1.nope=1") == 2
    assert "has no input 'nope'" in capsys.readouterr().err
    assert cli(tmp_path, "run", str(graph), "--set", "7.value=1") == 2
    assert "no node '7'" in capsys.readouterr().err


def test_run_invalid_graph_exits_2_with_node_errors(tmp_path, capsys):
    graph = write_graph(tmp_path, {"1": n("StubInt", value=5000), "2": n("StubSink", value=["1", 0])})
    assert cli(tmp_path, "run", str(graph)) == 2
    err = capsys.readouterr().err
    assert "node 1 (StubInt)" in err and "bigger than max" in err


def test_run_failure_exits_1_naming_the_node(tmp_path, capsys):
    graph = write_graph(tmp_path, {"1": n("StubInt", value=1), "2": n("StubFail", value=["1", 0], message="kaput"),
                                   "3": n("StubSink", value=["2", 0])})
    assert cli(tmp_path, "run", str(graph)) == 1
    err = capsys.readouterr().err
    assert "node 2 (StubFail) failed" in err and "kaput" in err


def test_nodes_lists_packs_and_failures(tmp_path, capsys):
    extra = tmp_path / "custom_nodes"
    extra.mkdir()
    (extra / "broken.py").write_text("raise ImportError('needs a missing library')\n")
    code = main(["nodes", "--custom-nodes", str(PACKS), "--custom-nodes", str(extra), "--no-builtin-nodes",
                 "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    packs = {p["name"]: len(p["nodes"]) for p in data["packs"]}
    assert packs["stub_pack"] > 10 and packs["comfy_style_pack"] == 12
    assert data["failures"] == [{"pack": "broken", "reason": "import failed: ImportError: needs a missing library"}]


def test_unknown_pack_command_exits_2(tmp_path, capsys):
    assert main(["bench", "nonexistent"]) == 2
    assert "bench executor" in capsys.readouterr().err


def test_commands_receive_their_options_untouched(monkeypatch):
    """`fewstep eval --n 32` (an entry point of the fewstep.commands group) and `fewstep bench stub --quick` (an
    external pack's cli_commands()) reach their function with every argument; the group's entry wins."""
    seen: dict[str, list[str]] = {}

    class FakeEntryPoint:
        name, value = "eval", "somewhere:main"

        def load(self):
            return lambda rest: seen.setdefault("eval", rest) and 0

    class FakeRegistry:
        def commands(self):
            return {"eval": lambda rest: seen.setdefault("pack eval", rest) and 0,
                    "bench stub": lambda rest: seen.setdefault("bench stub", rest) and 0}

    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [FakeEntryPoint()] if group == COMMANDS_GROUP else [])
    monkeypatch.setattr("fewstep.app.registry.load_registry", lambda *a, **k: FakeRegistry())
    assert main(["eval", "--n", "32", "--steps", "1,2"]) == 0
    assert main(["bench", "stub", "--quick"]) == 0
    assert seen == {"eval": ["--n", "32", "--steps", "1,2"], "bench stub": ["--quick"]}


def test_bench_executor_writes_json(tmp_path, capsys):  # about 0.5 s with one repeat: runs by default
    assert main(["bench", "executor", "--repeats", "1", "--json", str(tmp_path / "b.json")]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert set(report["results"]) == {"chain_1000", "fan_in_100"}
    assert {"cold_cpu_us", "cached_cpu_us", "cold_listened_cpu_us"} <= set(report["results"]["chain_1000"])
    assert "chain_1000" in capsys.readouterr().out


# -- the folders given on the command line are the ones validation sees ----------------------------
# StubCheckpoint's COMBO lists checkpoints/*.safetensors of the current Paths; run from an empty folder so
# that the default (./models, FEWSTEP_MODELS_DIRS) holds no checkpoint.

CKPT_GRAPH = {"1": n("StubCheckpoint", ckpt_name="x.safetensors"), "2": n("StubSink", value=["1", 0])}


def models_with(root: Path, *names: str) -> Path:
    for name in names:
        (root / "checkpoints").mkdir(parents=True, exist_ok=True)
        (root / "checkpoints" / name).write_bytes(b"stub")
    return root


def run_from_empty_cwd(monkeypatch, tmp_path: Path, *args: str) -> int:
    monkeypatch.delenv("FEWSTEP_MODELS_DIRS", raising=False)
    monkeypatch.delenv("FEWSTEP_HOME", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    return main([*args, "--custom-nodes", str(PACKS), "--no-builtin-nodes"])


def test_run_validates_against_models_dir(tmp_path, capsys, monkeypatch):
    models = models_with(tmp_path / "elsewhere", "x.safetensors")
    graph = str(write_graph(tmp_path, CKPT_GRAPH))
    home = str(tmp_path / "home")
    assert run_from_empty_cwd(monkeypatch, tmp_path, "run", graph, "--home", home, "--models-dir", str(models)) == 0
    capsys.readouterr()
    assert run_from_empty_cwd(monkeypatch, tmp_path, "run", graph, "--home", home) == 2
    err = capsys.readouterr().err
    assert "node 1 (StubCheckpoint)" in err and "Value not in list" in err


def test_run_validates_against_home_models(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    models_with(home / "models", "x.safetensors")
    graph = str(write_graph(tmp_path, CKPT_GRAPH))
    assert run_from_empty_cwd(monkeypatch, tmp_path, "run", graph, "--home", str(home)) == 0
    capsys.readouterr()
    assert run_from_empty_cwd(monkeypatch, tmp_path, "run", graph) == 2
    assert "Value not in list" in capsys.readouterr().err


def test_run_set_combo_value_from_models_dir(tmp_path, capsys, monkeypatch):
    models = models_with(tmp_path / "elsewhere", "x.safetensors", "only_here.safetensors")
    graph = str(write_graph(tmp_path, CKPT_GRAPH))
    home = str(tmp_path / "home")
    picked = ("--set", "1.ckpt_name=only_here.safetensors")
    assert run_from_empty_cwd(monkeypatch, tmp_path, "run", graph, *picked, "--home", home,
                              "--models-dir", str(models)) == 0
    capsys.readouterr()
    assert run_from_empty_cwd(monkeypatch, tmp_path, "run", graph, *picked, "--home", home) == 2
    assert "COMBO expected" in capsys.readouterr().err
