"""The editor's node badge names our pack, not "Comfy"/unknown: built-in packs report
``custom_nodes.fewstep-<pack>`` as ``python_module`` (the editor's getNodeSource reads ``custom_nodes.X``
as custom pack X; ``nodes``/``comfy_extras`` as Comfy Core; anything else as unknown)."""

from __future__ import annotations

from fewstep.app.registry import load_registry


def test_builtin_nodes_report_their_pack_as_source() -> None:
    registry = load_registry([], entry_points=False, builtin=True)
    info = registry.object_info()
    assert info["MLCMDistill"]["python_module"] == "custom_nodes.fewstep-mlcm"
    assert info["KSampler"]["python_module"] == "custom_nodes.fewstep-core"
    for name, node in info.items():
        module = node["python_module"].split(".")
        assert module[0] == "custom_nodes" and module[1] == f"fewstep-{registry.get(name).pack}", name
