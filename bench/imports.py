"""The import graph between node packs: ``python -m fewstep.bench.imports [--root DIR] [--prefix P]``.

Counts, for every pair of packs under ``fewstep/nodes``, the import statements (including those inside
functions) in one pack that name a module of the other, and how many names they bring in. The table in
docs/packaging.md ("Import graph") comes from this command.
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path


def pack_imports(source: str, prefix: tuple[str, ...] = ("fewstep", "nodes")) -> list[tuple[str, int]]:
    """(target pack, number of names) for every ``<prefix>.<pack>`` import statement in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [(alias.name, 1) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            modules = [(node.module, len(node.names))]
        else:
            continue
        for module, names in modules:
            bits = tuple(module.split("."))
            if bits[:len(prefix)] == prefix and len(bits) > len(prefix):
                found.append((bits[len(prefix)], names))
    return found


def cross_pack_counts(root: Path, prefix: tuple[str, ...]) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """(statements, names) per (importing pack, imported pack), own-pack imports left out."""
    statements: Counter[tuple[str, str]] = Counter()
    names: Counter[tuple[str, str]] = Counter()
    for path in sorted(root.glob("*/**/*.py")):
        own = path.relative_to(root).parts[0]
        for target, count in pack_imports(path.read_text(), prefix):
            if target != own:
                statements[own, target] += 1
                names[own, target] += count
    return statements, names


def markdown(root: Path, prefix: tuple[str, ...] = ("fewstep", "nodes")) -> str:
    statements, names = cross_pack_counts(root, prefix)
    lines = ["| pack | imports from | statements | names |", "|---|---|---:|---:|"]
    lines += [f"| {a} | {b} | {n} | {names[a, b]} |" for (a, b), n in sorted(statements.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewstep.bench.imports", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1] / "fewstep" / "nodes",
                        help="the folder holding the packs (default: this checkout's fewstep/nodes)")
    parser.add_argument("--prefix", default="fewstep.nodes",
                        help="the packs' import prefix (\"nodes\" for trees before the fewstep namespace)")
    args = parser.parse_args(argv)
    print(markdown(args.root, tuple(args.prefix.split("."))))  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
