"""Trainer and quantizer seeds start "fixed" in the editor, and widget values are read in the editor's
order (required inputs, then optional) so a saved trainer's seed is read as its seed."""

from __future__ import annotations

import pytest

from fewstep.app.registry import Registry, load_registry

GENERATOR_WORDS = ("Sampl", "TextToTriplane")   # nodes that make a new sample per Run
TRAINER_PACKS = ("mlcm", "slam", "tdm", "r0", "pso", "mixdq", "accvideo", "vdit", "prd", "dd", "culture")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry([], entry_points=False, builtin=True)


def test_trainer_and_quantizer_seeds_start_fixed_in_the_editor(registry: Registry) -> None:
    info = registry.object_info()
    seeded = {}
    for class_type, node in info.items():
        pack = registry.get(class_type).pack
        # samplers draw a new image per Run (ComfyUI's "randomize" is right there); trainers must resume
        if pack in TRAINER_PACKS and not any(word in class_type for word in GENERATOR_WORDS):
            for section in ("required", "optional"):
                spec = node["input"].get(section, {}).get("seed")
                if spec is not None:
                    seeded[class_type] = spec[1].get("control_after_generate")
    # every trainer (and MixDQ's calibration) has a seed, and each says "fixed" (the editor's default
    # for an INT named seed is "randomize", which started a new run folder on every Run)
    assert {"MLCMDistill", "SLAMDistill", "TDMDistill", "R0Train", "PSOOnline", "MixDQCalibrate",
            "TDMVideoDistill", "AccVideoDistill", "VDiTMLCDTrain", "VDiTKDTrain", "PRDDistill", "DDTrain",
            "CultureInWeights"} <= set(seeded)
    assert set(seeded.values()) == {"fixed"}, seeded


def test_widget_values_follow_the_editors_order_required_then_optional(registry: Registry) -> None:
    # R0Train declares optional weight_2/weight_3 between required widgets; the editor (1.58) makes
    # required widgets first, so a saved R0Train's seed sat where the converter read lora_rank.
    from fewstep.app.workflow import _widget_layout

    schema = registry.get("R0Train").schema
    layout = [name for name in _widget_layout(schema, legacy_forced=False) if name is not None]
    assert layout[-2:] == ["weight_2", "weight_3"]
    assert layout.index("seed") < layout.index("weight_2")
