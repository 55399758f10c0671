"""``fewstep bench e2e``: its checkpoint layout is what our loader reads, ComfyUI is skipped with a message,
and a failing job ends the run with the error and no figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fewstep.bench.core import e2e
from fewstep.bench.core.ldm_files import _meta_modules, ldm_layout
from fewstep.nodes.core.loaders import ldm_keys as K
from fewstep.nodes.core.loaders import sd


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_random_checkpoint_layout_is_the_real_architecture_our_loader_reads(arch: str) -> None:
    layout = ldm_layout(arch)                                  # meta tensors: names and shapes only
    assert sd.detect(layout) == ("sd1" if arch == "sd15" else "sdxl")
    unet, vae, texts = _meta_modules(arch)
    unet_ldm = K.split_prefix(layout, K.UNET_PREFIX)
    config = sd.unet_config(unet_ldm, "sd1" if arch == "sd15" else "sdxl")
    assert list(config["block_out_channels"]) == list(unet.config.block_out_channels)
    assert config["cross_attention_dim"] == unet.config.cross_attention_dim
    converted = K.convert_unet(unet_ldm)
    expected = unet.state_dict()
    assert sorted(converted) == sorted(expected)
    assert all(converted[k].shape == expected[k].shape for k in expected)
    assert sorted(K.convert_vae(K.split_prefix(layout, K.VAE_PREFIX))) == sorted(vae.state_dict())
    params = sum(v.numel() for k, v in layout.items() if k.startswith(K.UNET_PREFIX))
    assert params == sum(p.numel() for p in unet.parameters())  # 860 M (SD1.5) / 2.57 G (SDXL)


def test_comfyui_is_skipped_with_a_message_and_a_wrong_folder_refused(tmp_path: Path, capsys) -> None:
    args = e2e.parse(["--systems", "fewstep,comfyui"])
    assert e2e._systems(args) == ["fewstep"]
    assert "comfyui: skipped" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not a ComfyUI source folder"):
        e2e._systems(e2e.parse(["--comfyui", str(tmp_path)]))


def test_a_failing_job_gives_the_error_and_no_figures(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.safetensors"                        # a safetensors file that is no checkpoint
    save_file({"x": torch.zeros(2)}, str(bad))
    code = e2e.main(["--systems", "fewstep", "--checkpoint", str(bad), "--device", "cpu", "--size", "64",
                     "--jobs", "1", "--queue", "1", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1
    assert "no figures" in captured.err and "not a Stable Diffusion single-file checkpoint" in captured.err
    assert not (tmp_path / "out" / "bench_e2e.json").exists() and "| per job" not in captured.out


def test_table_compares_each_baseline_with_ours() -> None:
    results = {"fewstep": {"job_ms_median": 100.0, "job_ms_min": 90, "job_ms_max": 120, "queue_jobs_per_s": 10.0,
                           "first_image_s": 5.0, "checkpoint_load_s": 1.0},
               "diffusers": {"job_ms_median": 250.0, "job_ms_min": 240, "job_ms_max": 260, "queue_jobs_per_s": 4.0,
                             "first_image_s": 9.0, "checkpoint_load_s": 3.0}}
    text = e2e.table(results)
    assert "| per job, median (ms) | 100.0 | 250.0 |" in text
    assert "fewstep vs diffusers: per job 2.50x, queue 2.50x" in text
    json.dumps(results)
