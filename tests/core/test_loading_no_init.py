"""Checkpoint loading builds the networks without random initialisation and uses the file's tensors as
they are: every loaded weight equals the file's exactly, and no random init touches real memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import tiny_sd15, tiny_sdxl, to_ldm_checkpoint, to_ldm_unet, to_ldm_vae, to_open_clip

from fewstep.nodes.core.loaders import ldm_keys as K
from fewstep.nodes.core.loaders import sd
from fewstep.nodes.core.loaders.files import read_state_dict


@pytest.fixture
def init_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count random fills (``normal_`` / ``uniform_`` and the nn.init functions built on them, and
    transformers' own initialisers) of tensors that hold memory; fills of meta tensors cost nothing."""
    calls: list[str] = []
    for name in ("normal_", "uniform_", "trunc_normal_"):
        original = getattr(torch.Tensor, name, None)
        if original is None:
            continue

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if not self.is_meta:
                calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def _sdxl_file(tmp_path: Path) -> Path:
    unet, clip_l, clip_g = tiny_sdxl()
    _, vae, _ = tiny_sd15()
    state = to_ldm_unet(unet.state_dict(), [t.startswith("CrossAttn") for t in unet.config.up_block_types])
    state.update(to_ldm_vae(vae.state_dict(), len(vae.config.block_out_channels)))
    state.update({"conditioner.embedders.0.transformer.text_model." + k.removeprefix("text_model."): v
                  for k, v in clip_l.state_dict().items()})
    state.update({"conditioner.embedders.1.model." + k: v for k, v in to_open_clip(clip_g).items()})
    path = tmp_path / "xl.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _expected(state: dict, arch: str) -> dict[str, dict[str, torch.Tensor]]:
    """The file's tensors under each network's own names (the loader's key mapping)."""
    out = {"unet": K.convert_unet(K.split_prefix(state, K.UNET_PREFIX)),
           "vae": K.convert_vae(K.split_prefix(state, K.VAE_PREFIX)),
           "clip_l": K.convert_clip_l(K.split_prefix(state, K.CLIP_L_PREFIXES[0 if arch == "sd1" else 1]))}
    if arch == "sdxl":
        out["clip_g"] = K.convert_open_clip(K.split_prefix(state, K.OPENCLIP_PREFIX))
    return out


def _assert_equal(module: torch.nn.Module, expected: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    expected = {k.removeprefix("text_model."): v for k, v in expected.items()}
    loaded = {k.removeprefix("text_model."): v for k, v in module.state_dict().items() if not k.endswith("position_ids")}
    assert sorted(loaded) == sorted(expected)
    for key, value in loaded.items():
        assert value.dtype == dtype and not value.is_meta, key
        assert torch.equal(value, expected[key].to(dtype).reshape(value.shape)), key


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_loaded_weights_are_the_files_and_nothing_is_initialised(tmp_path: Path, arch: str, dtype: torch.dtype,
                                                                 init_calls: list[str]) -> None:
    if arch == "sd1":
        path = tmp_path / "sd.safetensors"
        save_file(to_ldm_checkpoint(*tiny_sd15()), str(path))
    else:
        path = _sdxl_file(tmp_path)
    init_calls.clear()                                   # the fixtures' own random init does not count
    state = read_state_dict(path)
    parts = sd.load_single_file(state, path, dtype, "cpu")
    assert init_calls == []
    expected = _expected(read_state_dict(path), arch)
    _assert_equal(parts.unet, expected["unet"], dtype)
    _assert_equal(parts.vae, expected["vae"], dtype)
    _assert_equal(parts.text_encoders[0], expected["clip_l"], dtype)
    if arch == "sdxl":
        _assert_equal(parts.text_encoders[1], expected["clip_g"], dtype)
    for encoder in parts.text_encoders:                   # rebuilt buffer, as transformers makes it
        ids = dict(encoder.named_buffers())
        position_ids = next(v for k, v in ids.items() if k.endswith("position_ids"))
        assert torch.equal(position_ids, torch.arange(77).expand(1, -1))


def test_counter_sees_an_initialising_constructor(init_calls: list[str]) -> None:
    """The counter is not blind: building a network the ordinary way is caught."""
    tiny_sd15()
    assert len(init_calls) > 10
