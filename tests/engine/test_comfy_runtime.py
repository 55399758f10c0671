"""Issue #14 item 10: the ComfyUI runtime modules classic custom packs import (``docs/comfyui-runtime.md``).

``runtime_packs/runtime_pack`` imports ``folder_paths``, ``nodes``, ``server``, ``comfy.utils``,
``comfy.model_management`` and ``comfy_api.latest`` the way ComfyUI packs do; ``needs_comfy_sd`` imports a
module we do not provide and must fail to load with a reason naming it, the rest loading.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from engine_helpers import Recorder, n

from fewstep.app.api import Paths
from fewstep.app.cache import CacheSet
from fewstep.app.cli import main
from fewstep.app.executor import Executor
from fewstep.app.registry import load_registry

HERE = Path(__file__).parent
RUNTIME_PACKS = HERE / "runtime_packs"
PACKS = HERE / "packs"


@pytest.fixture(scope="module")
def registry():
    return load_registry([PACKS, RUNTIME_PACKS], entry_points=False, builtin=False)


@pytest.fixture
def executor(registry, tmp_path):
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "tiny.safetensors").write_text("weights")
    paths = Paths(model_roots=(tmp_path / "models",), input_dir=tmp_path / "input",
                  output_dir=tmp_path / "output", temp_dir=tmp_path / "temp", user_dir=tmp_path / "user")
    return Executor(registry, CacheSet("lru:16"), paths)


def test_pack_loads_and_the_missing_module_is_named(registry):
    assert [f.pack for f in registry.failures] == ["needs_comfy_sd"]
    reason = registry.failures[0].reason
    assert reason.startswith("import failed: ModuleNotFoundError: No module named 'comfy.sd'")
    assert "is a ComfyUI module that fewstep does not provide" in reason
    pack = next(p for p in registry.packs if p.name == "runtime_pack")
    assert set(pack.node_names) == {"ListCheckpoints", "RuntimeSteps", "Notify", "ApiProgress"}


def test_folder_paths_and_nodes(executor, tmp_path):
    """folder_paths lists and finds model files and the output folder of the running app (ComfyUI
    ``folder_paths.py``: get_filename_list, get_full_path, get_save_image_path with %width%/%height%);
    nodes.NODE_CLASS_MAPPINGS holds the nodes loaded before the pack."""
    recorder = Recorder()
    result = executor.execute({"1": n("ListCheckpoints", ckpt_name="tiny.safetensors")}, prompt_id="p",
                              emit=recorder)
    assert result.status == "success", result.error
    ui = result.outputs["1"]
    assert ui["text"] == ["weights"] and ui["files"] == ["rt/8x4_00001_.txt"]
    assert ui["input_dir"] == [str(tmp_path / "input")] and ui["known"] == [1]
    assert (tmp_path / "output" / "rt" / "8x4_00001_.txt").read_text() == "weights"
    missing = executor.execute({"1": n("ListCheckpoints", ckpt_name="other.safetensors")}, prompt_id="q")
    assert missing.status == "error" and "value_not_in_list" in json.dumps(missing.error)


def test_progress_bar_drives_progress_and_previews(executor):
    """comfy.utils.ProgressBar -> progress / progress_state messages and preview images (ComfyUI
    ``main.py::hijack_progress``)."""
    recorder = Recorder()
    result = executor.execute({"1": n("RuntimeSteps", steps=3)}, prompt_id="p", emit=recorder)
    assert result.status == "success", result.error
    assert [(p["value"], p["max"], p["node"]) for p in recorder.of("progress")] == [(1, 3, "1"), (2, 3, "1"),
                                                                                   (3, 3, "1")]
    previews = recorder.of("preview")
    assert len(previews) == 3
    fmt, image, max_size = previews[0]["image"]  # ComfyUI's preview tuple reaches the server as it is
    assert (fmt, image.size, max_size) == ("JPEG", (16, 16), 512)
    assert result.outputs["1"]["device"][0] in ("cpu", "cuda:0")


def test_interrupt_through_model_management(executor):
    """An interrupt reaches a pack through ProgressBar / throw_exception_if_processing_interrupted and
    ends the run as interrupted (InterruptProcessingException is the engine's interrupt)."""
    stop = threading.Event()

    def emit(event, data):
        if event == "progress":
            stop.set()

    result = executor.execute({"1": n("RuntimeSteps", steps=50)}, prompt_id="p", emit=emit, interrupted=stop)
    assert result.status == "interrupted"


@pytest.mark.parametrize("use_async", [False, True])
def test_comfy_api_progress(executor, use_async):
    recorder = Recorder()
    result = executor.execute({"1": n("ApiProgress", use_async=use_async)}, prompt_id="p", emit=recorder)
    assert result.status == "success", result.error
    assert [p["value"] for p in recorder.of("progress")] == [1, 2]


def test_fewstep_nodes_lists_the_failed_pack(capsys):
    code = main(["nodes", "--custom-nodes", str(RUNTIME_PACKS), "--no-builtin-nodes", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [f["pack"] for f in data["failures"]] == ["needs_comfy_sd"]
    assert "comfy.sd" in data["failures"][0]["reason"]
    assert any(p["name"] == "runtime_pack" for p in data["packs"])


_PROBE = """
import importlib, json, sys
from fewstep.app.registry import load_registry
registry = load_registry([sys.argv[1]], entry_points=False, builtin=False)
pack = sys.modules["fewstep_custom_nodes.probe"]
import fewstep.app.api
print(json.dumps({"failures": [f.reason for f in registry.failures], "folder_paths": pack.FOLDER_PATHS,
                  "utils": pack.UTILS, "fewstep_api": fewstep.app.api.__file__}))
"""


def test_real_modules_of_the_environment_are_never_shadowed(tmp_path):
    """A ``folder_paths`` that the environment provides wins over ours; names nothing provides are ours."""
    real = tmp_path / "site"
    real.mkdir()
    (real / "folder_paths.py").write_text("REAL = True\n")
    pack = tmp_path / "custom_nodes" / "probe"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text(
        "import folder_paths, comfy.utils\n"
        "FOLDER_PATHS = folder_paths.__file__\n"
        "UTILS = comfy.utils.__name__\n"
        "NODE_CLASS_MAPPINGS = {}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(real), str(HERE.parents[1])])}
    done = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "custom_nodes")], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["failures"] == []
    assert out["folder_paths"] == str(real / "folder_paths.py")  # the environment's module
    assert out["utils"] == "fewstep.app.comfy_runtime.progress"  # ours: nothing else provides comfy
    assert out["fewstep_api"].endswith("fewstep/app/api.py")


def test_find_spec_answers_absent_for_modules_not_provided(registry):
    """Packs detect optional modules with importlib.util.find_spec: an unprovided ComfyUI module is absent
    (None), not an exception; a provided one is found."""
    import importlib.util

    assert importlib.util.find_spec("comfy.sd") is None
    assert importlib.util.find_spec("comfy.utils") is not None


def test_nothing_is_installed_without_custom_packs():
    code = ("import sys\nfrom fewstep.app.registry import load_registry\n"
            "load_registry([], entry_points=False, builtin=False)\n"
            "import importlib.util\nprint(importlib.util.find_spec('folder_paths') is None, "
            "any(type(f).__name__ == 'ComfyRuntimeFinder' for f in sys.meta_path))")
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]


def test_packs_import_with_the_configured_folders(tmp_path, capsys):
    """A pack that reads folder_paths while it imports sees the folders of --home (fewstep nodes / run /
    serve load packs inside them)."""
    pack = tmp_path / "custom_nodes" / "reads_at_import"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text("import folder_paths\nOUTPUT = folder_paths.get_output_directory()\n"
                                      "NODE_CLASS_MAPPINGS = {}\n")
    home = tmp_path / "home"
    assert main(["nodes", "--home", str(home), "--custom-nodes", str(tmp_path / "custom_nodes"),
                 "--no-builtin-nodes", "--json"]) == 0
    capsys.readouterr()
    assert sys.modules["fewstep_custom_nodes.reads_at_import"].OUTPUT == str(home / "output")


def test_model_files_follow_symlinks_but_names_stay_inside(executor, tmp_path, registry):
    """folder_paths.get_full_path: a symlinked model file is found; '..' and absolute names are not."""
    import folder_paths

    from fewstep.app.api import use_paths

    elsewhere = tmp_path / "other_disk" / "big.safetensors"
    elsewhere.parent.mkdir()
    elsewhere.write_text("x")
    (tmp_path / "models" / "checkpoints" / "big.safetensors").symlink_to(elsewhere)
    with use_paths(executor.paths):
        assert folder_paths.get_full_path("checkpoints", "big.safetensors").endswith("checkpoints/big.safetensors")
        assert folder_paths.get_full_path("checkpoints", "../checkpoints/tiny.safetensors") is None
        assert folder_paths.get_full_path("checkpoints", str(elsewhere)) is None
        assert "big.safetensors" in folder_paths.get_filename_list("checkpoints")
