"""A diffusers pipeline config folder (no weights) for SD1.5 / SDXL, written offline.

``StableDiffusion(XL)Pipeline.from_single_file(file, config=FOLDER, local_files_only=True)`` reads the
component configs from a folder instead of the Hub. We write it from the published configurations bundled
with the core pack (``nodes/core/configs``) and the CLIP BPE vocabulary we ship (``nodes.core.text``), so
the diffusers baseline of ``fewstep bench e2e`` runs on a machine without network.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

# the BPE file holds a version line, then 48,894 merges; CLIP uses the first 49152 - 256 - 2 of them
_CLIP_MERGES = 49152 - 256 - 2


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def write_tokenizer(folder: Path, pad_token: str) -> None:
    """CLIPTokenizer files (vocab.json, merges.txt, configs) from the vocabulary we ship."""
    from fewstep.nodes.core.text import ClipTokenizer, bpe_vocab_path

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(ClipTokenizer().encoder))
    lines = gzip.open(bpe_vocab_path()).read().decode().split("\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines[1:_CLIP_MERGES + 1]) + "\n")
    _write(folder / "tokenizer_config.json", {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
                                              "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                              "unk_token": "<|endoftext|>", "pad_token": pad_token,
                                              "do_lower_case": True})


def _text_config(name: str, architecture: str) -> dict[str, Any]:
    from fewstep.nodes.core.loaders.sd import bundled_config

    return {**bundled_config(name), "architectures": [architecture], "model_type": "clip_text_model",
            "torch_dtype": "float16"}


def write_pipeline_config(folder: Path, model: str) -> Path:
    """The config folder for ``model`` (``sd15`` | ``sdxl``); returns ``folder``."""
    from fewstep.nodes.core.loaders.sd import SCALING, bundled_config

    xl = model == "sdxl"
    unet = {**bundled_config("sdxl_unet" if xl else "sd1_unet"), "_class_name": "UNet2DConditionModel"}
    vae = {**bundled_config("vae"), "_class_name": "AutoencoderKL", "scaling_factor": SCALING["sdxl" if xl else "sd1"],
           "sample_size": 1024 if xl else 512}
    scheduler = {"_class_name": "LCMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
                 "beta_end": 0.012, "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
                 "timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False,
                 "clip_sample": False}
    index: dict[str, Any] = {"_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline",
                             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                             "scheduler": ["diffusers", "LCMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
                             "tokenizer": ["transformers", "CLIPTokenizer"]}
    _write(folder / "unet" / "config.json", unet)
    _write(folder / "vae" / "config.json", vae)
    _write(folder / "scheduler" / "scheduler_config.json", scheduler)
    _write(folder / "text_encoder" / "config.json", _text_config("clip_l", "CLIPTextModel"))
    write_tokenizer(folder / "tokenizer", "<|endoftext|>")
    if xl:
        index.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                     tokenizer_2=["transformers", "CLIPTokenizer"], force_zeros_for_empty_prompt=True)
        _write(folder / "text_encoder_2" / "config.json",
               _text_config("clip_g", "CLIPTextModelWithProjection"))
        write_tokenizer(folder / "tokenizer_2", "!")
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    _write(folder / "model_index.json", index)
    return folder
