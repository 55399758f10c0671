"""``python -m fewstep.bench.imports``: the cross-pack import counts of docs/packaging.md."""

from __future__ import annotations

from pathlib import Path

from fewstep.bench.imports import cross_pack_counts, pack_imports


def test_counts_statements_and_names_including_imports_inside_functions() -> None:
    source = ("from fewstep.nodes.core.train import vp, adapter\n"
              "import fewstep.nodes.zoo.data\n"
              "def f():\n    from fewstep.nodes.mlcm import train\n"
              "from fewstep.app.api import Node\n")
    assert pack_imports(source) == [("core", 2), ("zoo", 1), ("mlcm", 1)]


def test_own_pack_imports_are_left_out(tmp_path: Path) -> None:
    (tmp_path / "tdm").mkdir()
    (tmp_path / "tdm" / "loss.py").write_text("from fewstep.nodes.tdm.steps import x\nfrom fewstep.nodes.mlcm import y, z\n")
    statements, names = cross_pack_counts(tmp_path, ("fewstep", "nodes"))
    assert dict(statements) == {("tdm", "mlcm"): 1} and dict(names) == {("tdm", "mlcm"): 2}
