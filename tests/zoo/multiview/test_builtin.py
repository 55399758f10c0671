"""The multi-view teacher's shipped files and loader: the weights round-trip through save / load unchanged,
the loader node hands on the shipped teacher with its caption embedder, and the probe reads renders."""

from __future__ import annotations

import json

import torch

from fewstep.nodes.zoo.multiview import builtin
from fewstep.nodes.zoo.multiview.data import Primitive, render_primitives
from fewstep.nodes.zoo.multiview.evaluate import read_captions
from fewstep.nodes.zoo.multiview.models import PRESETS, MVUNet, TeacherConfig


def test_saved_teacher_loads_back_to_the_same_outputs(tmp_path, tiny_multiview_teacher):
    unet = tiny_multiview_teacher.unet
    builtin.save_weights(unet, tmp_path / builtin.TEACHER_FILE, {"unet": unet.config.to_dict()})
    loaded = builtin.load_teacher(tmp_path)
    assert loaded.unet.config == PRESETS["test"]
    x, t, text = torch.randn(2, 3, 16, 16), torch.tensor([10, 900]), torch.randn(2, 8)
    camera = torch.randn(2, 4)
    torch.testing.assert_close(loaded.eps(x, t, text, camera), tiny_multiview_teacher.eps(x, t, text, camera), rtol=0, atol=0)
    assert not any(p.requires_grad for p in loaded.unet.parameters())


def test_missing_weights_name_the_recipe(tmp_path):
    try:
        builtin.load_teacher(tmp_path)
    except FileNotFoundError as err:
        assert "fewstep.nodes.zoo.multiview.train" in str(err)
    else:
        raise AssertionError("load_teacher on an empty folder did not raise")


def test_shipped_config_matches_the_shipped_preset():
    config = json.loads((builtin.weights_dir() / builtin.TEACHER_FILE).with_suffix(".json").read_text())
    assert TeacherConfig.from_dict(config["unet"]) == PRESETS["shipped"]
    assert sum(p.numel() for p in MVUNet(PRESETS["shipped"]).parameters()) == 914_851      # the model card's count


def test_loader_node_returns_the_shipped_teacher():
    from fewstep.nodes.zoo.multiview.nodes import MULTIVIEW_TEACHER, MultiviewTeacherLoader

    schema = MultiviewTeacherLoader.define_schema()
    assert schema.node_id == "PRDLoadTeacher"                 # the id saved graphs use
    assert [o.type for o in schema.outputs] == [MULTIVIEW_TEACHER] == ["PRD_TEACHER"]
    bundle = MultiviewTeacherLoader.execute().values[0]
    assert isinstance(bundle, builtin.MultiviewTeacher) and bundle.name == builtin.TEACHER_FILE
    assert bundle.embed(["a red cube"]).shape == (1, 384)


def test_shipped_probe_reads_ground_truth_renders():
    probe = builtin.load_probe()
    prims = [Primitive("cube", "red"), Primitive("sphere", "blue"), Primitive("cylinder", "yellow")]
    images = render_primitives(prims, [30.0, 150.0, 270.0], [10.0, 20.0, 5.0]).permute(0, 3, 1, 2) * 2 - 1
    assert read_captions(probe, images) == prims
