"""The layering rules of docs/packaging.md that import-linter cannot see.

``bench/`` installs as ``fewstep.bench`` through a folder mapping, so import-linter (which walks the
``fewstep/`` folder) does not know the module; this test reads every import statement instead, including
the ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_modules(source: str) -> list[str]:
    """Every absolute module named by an import statement anywhere in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append(node.module)
    return found


def offenders(folder: Path, forbidden_prefix: str) -> list[str]:
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for module in imported_modules(path.read_text()):
            if module == forbidden_prefix or module.startswith(forbidden_prefix + "."):
                bad.append(f"{path.relative_to(REPO)} imports {module}")
    return bad


def test_the_scan_sees_imports_inside_functions() -> None:
    source = "def f():\n    from fewstep.bench.core import server\n    import fewstep.bench\n"
    assert imported_modules(source) == ["fewstep.bench.core", "fewstep.bench"]


def test_nothing_at_run_time_imports_the_experiments() -> None:
    assert offenders(REPO / "fewstep", "fewstep.bench") == []


def test_node_packs_reach_the_engine_only_through_its_node_api() -> None:
    """import-linter's list of engine modules goes stale when the engine grows a module; this does not."""
    bad = [line for line in offenders(REPO / "fewstep" / "nodes", "fewstep.app")
           if not line.endswith(" imports fewstep.app.api")]
    assert bad == []
