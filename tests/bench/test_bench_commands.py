"""``fewstep bench <what>`` / ``fewstep eval`` resolve every built-in command through the ``fewstep.commands``
entry-point group (pyproject.toml) to a ``main(argv)`` under ``fewstep.bench``: ``--help`` exits 0."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from fewstep.app.cli import COMMANDS_GROUP, entry_point_commands, main

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
BUILTIN = ["bench executor", "bench sampling", "bench server", "eval", "bench distill", "bench tdm", "bench mixdq",
           "bench templates"]


def declared() -> dict[str, str]:
    """Command name ("bench distill") -> entry point value, as pyproject.toml declares them."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return {name.replace(".", " "): value for name, value in project["entry-points"][COMMANDS_GROUP].items()}


def test_every_builtin_command_is_declared_and_installed() -> None:
    assert set(BUILTIN) <= set(declared())
    installed = {name: ep.value for name, ep in entry_point_commands().items()}
    assert installed == declared(), "stale install: run `pip install -e .` after editing the entry points"


def test_entry_point_names_follow_the_recommended_pattern() -> None:
    """Names with spaces make setuptools warn on every build; dots stand for them."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert all(re.fullmatch(r"[\w.-]+", name) for name in project["entry-points"][COMMANDS_GROUP])


def test_builtin_commands_live_in_bench() -> None:
    assert all(value.startswith("fewstep.bench.") for value in declared().values())


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_command_resolves_and_shows_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert name in entry_point_commands()
    with pytest.raises(SystemExit) as exit_info:
        main([*name.split(), "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_bench_list_names_every_builtin_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert {f"fewstep {name}" for name in BUILTIN} <= set(listed)
