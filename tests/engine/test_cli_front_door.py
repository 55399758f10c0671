"""The command line as a new user meets it: every option described with its default, `fewstep bench`
alone lists the benchmarks before any node pack is imported, a bad --set choice names every valid one."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pytest

from fewstep.app import cli
from fewstep.app.api import Combo

PACKS = Path(__file__).parent / "packs"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_command_is_described() -> None:
    for name, sub in _subparsers(cli.build_parser()).items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"fewstep {name} {action.dest}: no help text"


def test_serve_help_states_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("8188", "127.0.0.1", "the current folder", "FEWSTEP_HOME", "FEWSTEP_MODELS_DIRS", "lru:64"):
        assert default in text, default


def test_bench_alone_lists_builtin_commands_before_importing_packs(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen_before_packs: list[str] = []

    def packs() -> dict[str, object]:   # stands for the seconds-long import of every node pack
        seen_before_packs.append(capsys.readouterr().out)
        return {}

    monkeypatch.setattr(cli, "_pack_commands", packs)
    assert cli.main(["bench"]) == 0
    assert "fewstep bench executor" in seen_before_packs[0] and "fewstep eval" in seen_before_packs[0]


def test_bad_set_choice_lists_every_valid_value() -> None:
    choices = [f"sampler_{i}" for i in range(24)]
    with pytest.raises(cli.UsageError) as caught:
        cli.parse_set_value(Combo("sampler_name", choices), "nope", "21.sampler_name")
    assert all(choice in str(caught.value) for choice in choices)


def test_gitignore_covers_what_the_readme_commands_create() -> None:
    repo = Path(__file__).resolve().parents[2]
    ignored = set((repo / ".gitignore").read_text().split())
    for made in ("/models/", "/input/", "/output/", "/temp/", "/user/", "/custom_nodes/", "/out/", "/eval.json"):
        assert made in ignored, made


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_run_shows_node_step_and_loss_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    graph = {"1": {"class_type": "StubInt", "inputs": {"value": 4}},
             "2": {"class_type": "StubSlow", "inputs": {"value": ["1", 0], "steps": 3, "delay": 0.0}},
             "3": {"class_type": "StubSave", "inputs": {"value": ["2", 0], "prefix": "tty"}}}
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["run", str(path), "--home", str(tmp_path), "--custom-nodes", str(PACKS), "--no-builtin-nodes"]
    assert cli.main(args) == 0
    shown = terminal.getvalue()
    assert "node 2 (StubSlow)  step 3/3  loss 0.3333" in shown and shown.endswith("\n")
    assert capsys.readouterr().out.strip().endswith("tty_4.txt")   # stdout: the output paths only
    monkeypatch.setattr(sys, "stderr", io.StringIO())                # not a terminal: no progress line
    assert cli.main(args) == 0 and "step" not in sys.stderr.getvalue()
