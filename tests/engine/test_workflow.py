"""UI workflow -> API prompt conversion (app.workflow), on hand-written workflows of both schema versions.

Every expected prompt below is derived by hand from the rules in fewstep/app/workflow.py's docstring (which
follow the editor's graphToPrompt); the comments say which rule produces each surprising entry.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from fewstep.app.api import Boolean, Combo, Float, Input, Int, Link, Output, Schema, String
from fewstep.app.workflow import WorkflowConversionError, is_ui_workflow, ui_to_api

FIXTURES = Path(__file__).parent / "fixtures" / "workflows"
SAMPLERS = ["euler", "dpmpp_2m", "lcm"]


# ---------------------------------------------------------------------------------------------
# A small registry of hand-written schemas (the real registry is not needed here)
# ---------------------------------------------------------------------------------------------


def _schemas() -> list[Schema]:
    return [
        Schema("CheckpointLoaderSimple", display_name="Load Checkpoint",
               inputs=[Combo("ckpt_name", ["m.safetensors", "model.safetensors"])],
               outputs=[Output("MODEL", "MODEL"), Output("CLIP", "CLIP"), Output("VAE", "VAE")]),
        Schema("CLIPTextEncode", display_name="CLIP Text Encode (Prompt)",
               inputs=[String("text", multiline=True), Link("clip", "CLIP")],
               outputs=[Output("CONDITIONING", "CONDITIONING")]),
        Schema("EmptyLatentImage", inputs=[Int("width", 512), Int("height", 512), Int("batch_size", 1)],
               outputs=[Output("LATENT", "LATENT")]),
        Schema("KSampler", inputs=[
            Link("model", "MODEL"), Int("seed", 0), Int("steps", 20), Float("cfg", 8.0),
            Combo("sampler_name", SAMPLERS), Combo("scheduler", ["normal", "simple"]),
            Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"),
            Link("latent_image", "LATENT"), Float("denoise", 1.0)],
            outputs=[Output("LATENT", "LATENT")]),
        Schema("VAEDecode", inputs=[Link("samples", "LATENT"), Link("vae", "VAE")],
               outputs=[Output("IMAGE", "IMAGE")]),
        Schema("SaveImage", inputs=[Link("images", "IMAGE"), String("filename_prefix", "ComfyUI")],
               is_output_node=True),
        Schema("LoadImage", inputs=[Combo("image", ["cat.png"], extra={"image_upload": True})],
               outputs=[Output("IMAGE", "IMAGE"), Output("MASK", "MASK")]),
        Schema("ImageInvert", inputs=[Link("image", "IMAGE")], outputs=[Output("IMAGE", "IMAGE")]),
        Schema("Swap", inputs=[Link("mask", "MASK"), Link("image", "IMAGE")],
               outputs=[Output("IMAGE", "IMAGE"), Output("MASK", "MASK")]),
        Schema("Pick3", inputs=[Link("anything", "*"), Link("latent", "LATENT"), Link("image", "IMAGE")],
               outputs=[Output("MASK", "MASK"), Output("IMAGE", "IMAGE")]),
        Schema("MaskToImage", inputs=[Link("mask", "MASK")], outputs=[Output("IMAGE", "IMAGE")]),
        Schema("IntConst", inputs=[Int("value", 0)], outputs=[Output("INT", "INT")]),
        Schema("PrimitiveString", inputs=[String("value")], outputs=[Output("STRING", "STRING")]),
        Schema("ConditioningSetStrength", inputs=[Link("conditioning", "CONDITIONING"), Float("strength", 1.0)],
               outputs=[Output("CONDITIONING", "CONDITIONING")]),
        Schema("ShowConditioning", inputs=[Link("conditioning", "CONDITIONING")], is_output_node=True),
        # widget-layout cases
        Schema("PickOne", inputs=[Combo("choice", ["a", "b", "c"], control_after_generate=True),
                                  Float("strength", 1.0)]),
        Schema("RandomNumber", inputs=[Int("value", 0, control_after_generate=True), Float("scale", 1.0)]),
        Schema("Jitter", inputs=[Float("amount", 0.0, control_after_generate=True), Int("count", 1)]),
        Schema("RandomNoise", inputs=[Int("noise_seed", 0)]),
        Schema("Forced", inputs=[Input("a", "INT", force_input=True), Int("b", 0)]),
        Schema("LoadImagePlus", inputs=[Combo("image", ["cat.png"], extra={"image_upload": True}),
                                        Int("frame", 0)]),
        Schema("LoadAudioPlus", inputs=[Combo("audio", ["x.mp3"], extra={"audio_upload": True}),
                                        Float("gain", 1.0)]),
        Schema("VideoCombine", inputs=[Link("images", "IMAGE"), Float("frame_rate", 8.0),
                                       Combo("format", ["image/gif", "video/h264"]),
                                       Boolean("save_output", True)]),
        Schema("MultiPick", inputs=[Input("tags", "COMBO", choices=["x", "y", "z"], extra={"multi_select": True})]),
        Schema("NoDefaultCombo", inputs=[Combo("mode", ["first", "second"]), Boolean("flag", False)]),
    ]


@dataclass
class _NodeDef:
    schema: Schema


class FakeRegistry:
    def __init__(self, schemas: list[Schema]) -> None:
        self._defs = {schema.node_id: _NodeDef(schema) for schema in schemas}

    def get(self, class_type: str) -> _NodeDef | None:
        return self._defs.get(class_type)


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry(_schemas())


def _load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _without_meta(prompt: dict) -> dict:
    return {node_id: {k: v for k, v in node.items() if k != "_meta"} for node_id, node in prompt.items()}


# ---------------------------------------------------------------------------------------------
# Whole fixtures
# ---------------------------------------------------------------------------------------------

BASIC_EXPECTED = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"},
          "_meta": {"title": "Load Checkpoint"}},           # no saved title -> schema display name
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["4", 1]},
          "_meta": {"title": "Positive"}},                  # the node's own title
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]},
          "_meta": {"title": "CLIP Text Encode (Prompt)"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 1},
          "_meta": {"title": "EmptyLatentImage"}},          # no display name -> class name
    # widgets_values [42, "randomize", 20, 8.0, ...]: "randomize" is the seed's control widget
    "3": {"class_type": "KSampler", "inputs": {
        "seed": 42, "steps": 20, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]},
        "_meta": {"title": "KSampler"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]},
          "_meta": {"title": "VAEDecode"}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "fewstep", "images": ["8", 0]},
          "_meta": {"title": "SaveImage"}},
    # ["cat.png", "image"]: the second entry is the frontend-only upload button
    "10": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}, "_meta": {"title": "LoadImage"}},
    # Note (11) and MarkdownNote (12) are frontend-only: absent
}


def test_basic_v04_exact_prompt(registry):
    # links as arrays; a native reroute in extra.reroutes/linkExtensions changes nothing
    assert ui_to_api(_load("basic_v04.json"), registry) == BASIC_EXPECTED


def test_basic_v1_gives_the_same_prompt(registry):
    # links as objects with parentId (native reroutes), every widget listed as an unlinked input slot
    # (so links' target_slot differs from v0.4), widgets_values_named beside widgets_values
    assert ui_to_api(_load("basic_v1.json"), registry) == BASIC_EXPECTED


def test_modes_v04_exact_prompt(registry):
    prompt = ui_to_api(_load("modes_v04.json"), registry)
    assert _without_meta(prompt) == {
        "1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
        # 2 (ImageInvert) is bypassed: its IMAGE output passes through its IMAGE input from 1
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "bypassed", "images": ["1", 0]}},
        # 13 is bypassed and fed by bypassed 2: both are skipped
        "14": {"class_type": "SaveImage", "inputs": {"filename_prefix": "chain", "images": ["1", 0]}},
        # 4 (Swap: inputs mask, image; outputs IMAGE, MASK) bypassed: the input at the output's own index
        # has the wrong type, so each output takes the input of its exact type instead
        "5": {"class_type": "SaveImage", "inputs": {"filename_prefix": "swap", "images": ["1", 0]}},
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 1]}},
        # 7 (VAEDecode) bypassed with no IMAGE input: the consumer's input stays unconnected
        "8": {"class_type": "SaveImage", "inputs": {"filename_prefix": "nomatch"}},
        # width fed by muted 9: removed, widget value too; height fed by bypassed 15 (no input to pass
        # through): keeps its widget value
        "10": {"class_type": "EmptyLatentImage", "inputs": {"height": 768, "batch_size": 1}},
        # 11 (ImageInvert) muted: its consumer loses the input
        "12": {"class_type": "SaveImage", "inputs": {"filename_prefix": "muted"}},
    }


def _bypass_graph(pick3_inputs: list[dict], links: list[list]) -> dict:
    return {"version": 0.4, "links": links, "nodes": [
        {"id": 1, "type": "LoadImage", "mode": 0, "inputs": [], "widgets_values": ["cat.png", "image"],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}, {"name": "MASK", "type": "MASK", "links": []}]},
        {"id": 2, "type": "Pick3", "mode": 4, "inputs": pick3_inputs,
         "outputs": [{"name": "MASK", "type": "MASK", "links": []}, {"name": "IMAGE", "type": "IMAGE", "links": [9]}]},
        {"id": 3, "type": "SaveImage", "mode": 0, "outputs": [], "widgets_values": ["out"],
         "inputs": [{"name": "images", "type": "IMAGE", "link": 9}]},
    ]}


def test_bypass_prefers_exact_type_over_first_compatible(registry):
    # output 1 (IMAGE): input 1 is LATENT (no); input 0 is "*" (compatible) but input 2 is exactly IMAGE
    inputs = [{"name": "anything", "type": "*", "link": 1}, {"name": "latent", "type": "LATENT", "link": None},
              {"name": "image", "type": "IMAGE", "link": 2}]
    workflow = _bypass_graph(inputs, [[1, 1, 1, 2, 0, "MASK"], [2, 1, 0, 2, 2, "IMAGE"], [9, 2, 1, 3, 0, "IMAGE"]])
    assert ui_to_api(workflow, registry)["3"]["inputs"] == {"filename_prefix": "out", "images": ["1", 0]}


def test_bypass_through_an_unconnected_input_leaves_the_consumer_unconnected(registry):
    inputs = [{"name": "anything", "type": "*", "link": 1}, {"name": "latent", "type": "LATENT", "link": None},
              {"name": "image", "type": "IMAGE", "link": None}]
    workflow = _bypass_graph(inputs, [[1, 1, 1, 2, 0, "MASK"], [9, 2, 1, 3, 0, "IMAGE"]])
    assert ui_to_api(workflow, registry)["3"]["inputs"] == {"filename_prefix": "out"}


def test_bypass_falls_back_to_first_compatible_input(registry):
    # no input at the output's index fits and none is exactly IMAGE: "*" accepts anything
    inputs = [{"name": "anything", "type": "*", "link": 1}, {"name": "latent", "type": "LATENT", "link": None}]
    workflow = _bypass_graph(inputs, [[1, 1, 0, 2, 0, "IMAGE"], [9, 2, 1, 3, 0, "IMAGE"]])
    assert ui_to_api(workflow, registry)["3"]["inputs"] == {"filename_prefix": "out", "images": ["1", 0]}


def test_bypass_into_an_any_typed_input_takes_the_same_index(registry):
    # the consumer accepts "*": the editor passes input N through to output N
    inputs = [{"name": "anything", "type": "*", "link": 1}, {"name": "latent", "type": "LATENT", "link": 2}]
    workflow = _bypass_graph(inputs, [[1, 1, 0, 2, 0, "IMAGE"], [2, 4, 0, 2, 1, "LATENT"], [9, 2, 1, 3, 0, "*"]])
    workflow["nodes"][2] = {"id": 3, "type": "MysteryNode", "mode": 0, "outputs": [],
                            "inputs": [{"name": "source", "type": "*", "link": 9}]}
    workflow["nodes"].append({"id": 4, "type": "EmptyLatentImage", "mode": 0, "inputs": [],
                              "outputs": [{"name": "LATENT", "type": "LATENT", "links": [2]}]})
    assert ui_to_api(workflow, registry)["3"]["inputs"] == {"source": ["4", 0]}


def test_subgraph_output_found_without_link_ids(registry):
    # some saved definitions lack outputs[].linkIds; the link into the output node (-20) is enough
    workflow = _load("subgraph_v1.json")
    tweak = workflow["definitions"]["subgraphs"][1]["definitions"]["subgraphs"][0]
    for output in tweak["outputs"]:
        del output["linkIds"]
    assert _without_meta(ui_to_api(workflow, registry)) == SUBGRAPH_EXPECTED


def test_primitive_and_reroute_nodes_v04(registry):
    prompt = ui_to_api(_load("primitive_reroute_v04.json"), registry)
    assert _without_meta(prompt) == {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        # model through two Reroute nodes; seed from PrimitiveNode 5 (stale 42 replaced); sampler_name
        # from the combo PrimitiveNode 8 (its "fixed" and filter entries are frontend-only)
        "4": {"class_type": "KSampler", "inputs": {
            "seed": 1234, "steps": 20, "cfg": 7.5, "sampler_name": "dpmpp_2m", "scheduler": "normal",
            "denoise": 1.0, "model": ["1", 0]}},
        # the same primitive reaches this seed through a Reroute
        "7": {"class_type": "KSampler", "inputs": {
            "seed": 1234, "steps": 4, "cfg": 1.0, "sampler_name": "lcm", "scheduler": "simple",
            "denoise": 1.0, "model": ["1", 0]}},
    }


SUBGRAPH_EXPECTED = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
    "20": {"class_type": "PrimitiveString", "inputs": {"value": "from outside"}},
    # instance 10: clip from outside, text = the instance's promoted widget value
    "10:1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["1", 1]}},
    # instance 11: the promoted input is linked outside, the link wins
    "11:1": {"class_type": "CLIPTextEncode", "inputs": {"text": ["20", 0], "clip": ["1", 1]}},
    # instance 12 saved no value: the inner node keeps its own
    "12:1": {"class_type": "CLIPTextEncode", "inputs": {"text": "inner default", "clip": ["1", 1]}},
    # nested: root instance 13 of Pair -> Pair's inner instance 3 of Encode -> CLIPTextEncode 1
    "13:3:1": {"class_type": "CLIPTextEncode", "inputs": {"text": "nested text", "clip": ["1", 1]}},
    # 14 (muted instance) and 15 (bypassed instance): contents absent
    "16:1": {"class_type": "ConditioningSetStrength", "inputs": {"strength": 0.5, "conditioning": ["10:1", 0]}},
    "31": {"class_type": "ShowConditioning", "inputs": {"conditioning": ["10:1", 0]}},
    "32": {"class_type": "ShowConditioning", "inputs": {"conditioning": ["11:1", 0]}},
    "33": {"class_type": "ShowConditioning", "inputs": {"conditioning": ["12:1", 0]}},
    "34": {"class_type": "ShowConditioning", "inputs": {"conditioning": ["13:3:1", 0]}},
    "35": {"class_type": "ShowConditioning", "inputs": {}},                           # fed by muted 14
    "36": {"class_type": "ShowConditioning", "inputs": {"conditioning": ["10:1", 0]}},  # through bypassed 15
    "37": {"class_type": "ShowConditioning", "inputs": {"conditioning": ["16:1", 0]}},
    # Tweak's output "raw" is wired straight from its input inside the subgraph
    "38": {"class_type": "ShowConditioning", "inputs": {"conditioning": ["10:1", 0]}},
}


def test_subgraphs_v1_exact_prompt(registry):
    prompt = ui_to_api(_load("subgraph_v1.json"), registry)
    assert _without_meta(prompt) == SUBGRAPH_EXPECTED
    assert prompt["10:1"]["_meta"] == {"title": "CLIP Text Encode (Prompt)"}


def test_subgraphs_with_v04_root_links(registry):
    # what the editor saves today: a 0.4 root (array links) with object-link subgraph definitions
    workflow = _load("subgraph_v1.json")
    workflow["version"] = 0.4
    workflow["links"] = [[lk["id"], lk["origin_id"], lk["origin_slot"], lk["target_id"], lk["target_slot"],
                          lk["type"]] for lk in workflow["links"]]
    assert _without_meta(ui_to_api(workflow, registry)) == SUBGRAPH_EXPECTED


def test_subgraph_instance_named_values(registry):
    workflow = _load("subgraph_v1.json")
    instance = next(node for node in workflow["nodes"] if node["id"] == 10)
    instance["widgets_values_named"] = {"text": "named fox"}
    # the positional list is what the editor restores by default
    assert ui_to_api(workflow, registry)["10:1"]["inputs"]["text"] == "a red fox"
    instance["widgets_values"] = []
    assert ui_to_api(workflow, registry)["10:1"]["inputs"]["text"] == "named fox"
    instance["widgets_values"] = {"text": "dict fox"}
    assert ui_to_api(workflow, registry)["10:1"]["inputs"]["text"] == "dict fox"


def test_subgraph_instance_input_from_muted_node(registry):
    workflow = _load("subgraph_v1.json")
    next(node for node in workflow["nodes"] if node["id"] == 20)["mode"] = 2
    prompt = ui_to_api(workflow, registry)
    assert "20" not in prompt
    assert prompt["11:1"]["inputs"] == {"clip": ["1", 1]}  # text lost, as the editor does


# ---------------------------------------------------------------------------------------------
# Widget values (small inline v0.4 workflows)
# ---------------------------------------------------------------------------------------------


def _one_node(node_type: str, widgets_values, **extra) -> dict:
    node = {"id": 1, "type": node_type, "mode": 0, "inputs": [], "outputs": [],
            "widgets_values": widgets_values, **extra}
    return {"version": 0.4, "nodes": [node], "links": []}


@pytest.mark.parametrize(("node_type", "values", "expected"), [
    # COMBO with control_after_generate: value, control mode, control filter list
    ("PickOne", ["b", "increment", "", 0.7], {"choice": "b", "strength": 0.7}),
    # INT flagged control_after_generate (not named seed)
    ("RandomNumber", [7, "fixed", 2.5], {"value": 7, "scale": 2.5}),
    # FLOAT flagged control_after_generate
    ("Jitter", [0.3, "randomize", 4], {"amount": 0.3, "count": 4}),
    # INT named noise_seed gets a control widget by name
    ("RandomNoise", [99, "randomize"], {"noise_seed": 99}),
    # image upload: the upload button follows the combo
    ("LoadImagePlus", ["cat.png", "image", 3], {"image": "cat.png", "frame": 3}),
    # audio upload: player + upload button follow the combo
    ("LoadAudioPlus", ["x.mp3", None, None, 0.5], {"audio": "x.mp3", "gain": 0.5}),
    # forceInput widget: current layout (no position) and the pre-1.16 one (a position to skip)
    ("Forced", [4], {"b": 4}),
    ("Forced", [3, 4], {"b": 4}),
    # dict-form widgets_values; unknown keys (previews) ignored
    ("VideoCombine", {"frame_rate": 12, "format": "video/h264", "save_output": False, "videopreview": {"a": 1}},
     {"frame_rate": 12, "format": "video/h264", "save_output": False}),
    # list constants are boxed so they cannot read as links
    ("MultiPick", [["x", "z"]], {"tags": {"__value__": ["x", "z"]}}),
    # missing values: schema defaults; a COMBO without default takes its first choice
    ("EmptyLatentImage", [640], {"width": 640, "height": 512, "batch_size": 1}),
    ("NoDefaultCombo", [], {"mode": "first", "flag": False}),
])
def test_widget_value_layout(registry, node_type, values, expected):
    assert ui_to_api(_one_node(node_type, values), registry)["1"]["inputs"] == expected


def test_widgets_values_named_wins_when_positional_does_not_fit(registry):
    # positional list missing the control entry (would shift every value); the named map is exact
    workflow = _one_node("KSampler", [5, 20, 8.0, "euler", "normal", 1.0],
                         widgets_values_named={"seed": 5, "control_after_generate": "fixed", "steps": 20,
                                               "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal",
                                               "denoise": 1.0})
    assert ui_to_api(workflow, registry)["1"]["inputs"] == {
        "seed": 5, "steps": 20, "cfg": 8.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}


def test_positional_values_win_when_they_fit_the_layout(registry):
    # real saved files disagree at times; the editor (default settings) restores the positional list
    workflow = _one_node("LoadImage", ["cat.png", "image"],
                         widgets_values_named={"image": "dog.png", "upload": "image"})
    assert ui_to_api(workflow, registry)["1"]["inputs"] == {"image": "cat.png"}


def test_widget_converted_to_input_takes_the_link(registry):
    workflow = {"version": 0.4, "links": [[1, 2, 0, 1, 0, "INT"]], "nodes": [
        {"id": 1, "type": "EmptyLatentImage", "mode": 0, "outputs": [],
         "inputs": [{"name": "height", "type": "INT", "widget": {"name": "height"}, "link": 1}],
         "widgets_values": [512, 768, 2]},
        {"id": 2, "type": "IntConst", "mode": 0, "inputs": [],
         "outputs": [{"name": "INT", "type": "INT", "links": [1]}], "widgets_values": [1024]},
    ]}
    # the saved 768 still holds height's position: width and batch_size are read correctly around it
    assert ui_to_api(workflow, registry)["1"]["inputs"] == {"width": 512, "height": ["2", 0], "batch_size": 2}


def test_converted_widget_slot_with_another_name_uses_the_widget_name(registry):
    workflow = {"version": 0.4, "links": [[1, 2, 0, 1, 0, "INT"]], "nodes": [
        {"id": 1, "type": "EmptyLatentImage", "mode": 0, "outputs": [],
         "inputs": [{"name": "Height (px)", "type": "INT", "widget": {"name": "height"}, "link": 1}],
         "widgets_values": [512, 768, 2]},
        {"id": 2, "type": "IntConst", "mode": 0, "inputs": [],
         "outputs": [{"name": "INT", "type": "INT", "links": [1]}], "widgets_values": [1024]},
    ]}
    assert ui_to_api(workflow, registry)["1"]["inputs"]["height"] == ["2", 0]


def test_unknown_class_passes_through_for_validation(registry):
    workflow = {"version": 0.4, "links": [[1, 2, 0, 1, 0, "IMAGE"]], "nodes": [
        {"id": 1, "type": "MysteryNode", "mode": 0, "outputs": [],
         "inputs": [{"name": "image", "type": "IMAGE", "link": 1}], "widgets_values": [3, "x"]},
        {"id": 2, "type": "LoadImage", "mode": 0, "inputs": [],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": ["cat.png", "image"]},
    ]}
    assert ui_to_api(workflow, registry)["1"] == {
        "class_type": "MysteryNode", "inputs": {"image": ["2", 0]},
        "_meta": {"title": "MysteryNode", "widgets_values": [3, "x"]}}


# ---------------------------------------------------------------------------------------------
# Format detection and errors
# ---------------------------------------------------------------------------------------------


def test_is_ui_workflow():
    assert is_ui_workflow(_load("basic_v04.json"))
    assert is_ui_workflow(_load("subgraph_v1.json"))
    assert not is_ui_workflow({"3": {"class_type": "KSampler", "inputs": {}}})
    assert not is_ui_workflow({"nodes": {"class_type": "X", "inputs": {}}})  # an API node called "nodes"
    assert not is_ui_workflow([])


def test_api_prompt_is_rejected(registry):
    with pytest.raises(WorkflowConversionError, match="not a UI workflow"):
        ui_to_api({"3": {"class_type": "KSampler", "inputs": {}}}, registry)


def test_missing_link_names_the_node(registry):
    workflow = _load("basic_v04.json")
    workflow["links"] = [link for link in workflow["links"] if link[0] != 8]
    with pytest.raises(WorkflowConversionError, match=r"node 8 \(VAEDecode\) input 'vae': link 8 does not exist"):
        ui_to_api(workflow, registry)


def test_link_from_missing_node_names_both(registry):
    workflow = _load("basic_v04.json")
    workflow["nodes"] = [node for node in workflow["nodes"] if node["id"] != 5]
    with pytest.raises(WorkflowConversionError,
                       match=r"node 3 \(KSampler\) input 'latent_image': link 2 comes from node 5"):
        ui_to_api(workflow, registry)


def test_self_containing_subgraph_is_rejected(registry):
    workflow = _load("subgraph_v1.json")
    encode = workflow["definitions"]["subgraphs"][0]
    encode["nodes"].append(copy.deepcopy(next(n for n in workflow["nodes"] if n["id"] == 12)) | {"id": 9})
    with pytest.raises(WorkflowConversionError, match=r"node 9 \(11111111-.*contains itself"):
        ui_to_api(workflow, registry)


def test_legacy_group_node_is_rejected_by_name(registry):
    workflow = _one_node("workflow>MyGroup", [])
    workflow["extra"] = {"groupNodes": {"MyGroup": {"nodes": [], "links": [], "external": []}}}
    with pytest.raises(WorkflowConversionError, match=r"node 1 \(workflow>MyGroup\) is a legacy group node"):
        ui_to_api(workflow, registry)


def test_reroute_loop_is_an_error_not_a_hang(registry):
    workflow = {"version": 0.4, "links": [[1, 2, 0, 3, 0, "*"], [2, 3, 0, 2, 0, "*"], [3, 3, 0, 1, 0, "IMAGE"]],
                "nodes": [
                    {"id": 1, "type": "ImageInvert", "mode": 0, "outputs": [],
                     "inputs": [{"name": "image", "type": "IMAGE", "link": 3}]},
                    {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 2}],
                     "outputs": [{"name": "", "type": "*", "links": [1]}]},
                    {"id": 3, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
                     "outputs": [{"name": "", "type": "*", "links": [2, 3]}]},
                ]}
    with pytest.raises(WorkflowConversionError, match=r"form a loop"):
        ui_to_api(workflow, registry)
