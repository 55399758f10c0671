"""The offline diffusers config folder of ``fewstep bench e2e``: tokenizers equal ours, scheduler and
model configs are the published architectures (the SD1.5 folder also ran ``from_single_file`` end to end in
``fewstep bench e2e --device cpu``; the SDXL file is too large for a test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewstep.bench.core.diffusers_config import write_pipeline_config
from fewstep.nodes.core.text import ClipTokenizer


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_config_folder_loads_offline_with_our_tokenizer(tmp_path: Path, model: str) -> None:
    from diffusers import LCMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    folder = write_pipeline_config(tmp_path / model, model)
    text = "a red fox in the snow, detailed, soft light"
    pads = {"tokenizer": 49407} if model == "sd15" else {"tokenizer": 49407, "tokenizer_2": 0}
    for sub, pad in pads.items():
        tokenizer = CLIPTokenizer.from_pretrained(folder / sub, local_files_only=True)
        ids = tokenizer(text, padding="max_length", max_length=77).input_ids
        assert ids == ClipTokenizer(pad_id=pad)(text)
    scheduler = LCMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    assert scheduler.config.beta_schedule == "scaled_linear"
    unet = UNet2DConditionModel.load_config(folder / "unet")
    assert unet["cross_attention_dim"] == (768 if model == "sd15" else 2048)
    if model == "sdxl":
        clip_g = CLIPTextConfig.from_pretrained(folder / "text_encoder_2", local_files_only=True)
        assert (clip_g.hidden_size, clip_g.num_hidden_layers, clip_g.projection_dim) == (1280, 32, 1280)
