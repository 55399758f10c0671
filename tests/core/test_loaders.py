"""Loaders: the LDM single-file layout, SD1.5 end to end against diffusers' pipeline, tokenizer, file safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import tiny_sd15, to_ldm_checkpoint

from fewstep.app.api import Paths, use_paths
from fewstep.nodes.core.loaders import ldm_keys as K
from fewstep.nodes.core.loaders.files import ModelFileError, read_state_dict

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def sd15():
    unet, vae, text = tiny_sd15()
    return unet, vae, text, to_ldm_checkpoint(unet, vae, text)


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key].reshape(a[key].shape)), key


def test_written_layout_is_what_diffusers_reads_as_ldm(sd15) -> None:
    # independent check of the fixture's LDM names: diffusers' own single-file converter
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    unet, vae, _, ldm = sd15
    _same(unet.state_dict(), convert_ldm_unet_checkpoint(dict(ldm), dict(unet.config)))
    _same(vae.state_dict(), convert_ldm_vae_checkpoint(dict(ldm), dict(vae.config)))


def test_our_key_mapping_recovers_diffusers_weights(sd15) -> None:
    unet, vae, text, ldm = sd15
    _same(unet.state_dict(), K.convert_unet(K.split_prefix(ldm, K.UNET_PREFIX)))
    _same(vae.state_dict(), K.convert_vae(K.split_prefix(ldm, K.VAE_PREFIX)))
    expected = {"text_model." + k.removeprefix("text_model."): v for k, v in text.state_dict().items()
                if not k.endswith("position_ids")}
    _same(expected, K.convert_clip_l(K.split_prefix(ldm, K.CLIP_L_PREFIXES[0])))


def _clip_tokenizer_from_gz(tmp: Path):
    """transformers' CLIPTokenizer over vocab/merges files written from open_clip's BPE file."""
    from transformers import CLIPTokenizer

    from fewstep.nodes.core.text import ClipTokenizer

    ours = ClipTokenizer()
    (tmp / "vocab.json").write_text(json.dumps(ours.encoder))
    import gzip

    lines = gzip.open(__import__("fewstep.nodes.core.text", fromlist=["x"]).bpe_vocab_path()).read().decode().split("\n")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines[1:49152 - 256 - 2 + 1]) + "\n")
    return CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), pad_token="<|endoftext|>", model_max_length=77)


def test_tokenizer_matches_transformers_clip_tokenizer(tmp_path: Path) -> None:
    from fewstep.nodes.core.text import ClipTokenizer

    reference = _clip_tokenizer_from_gz(tmp_path)
    ours = ClipTokenizer()
    for text in ["a photo of an astronaut riding a horse", "Hello,   WORLD!! it's 2024 — naïve café",
                 "", "a large red circle above a large green cross " * 12]:
        expected = reference(text, padding="max_length", max_length=77, truncation=True).input_ids
        assert ours(text) == expected, text


def _run_nodes(paths: Paths, prompt: str, seed: int, steps: int, cfg: float):
    from fewstep.nodes.core import nodes as N

    with use_paths(paths):
        model, clip, vae = N.CheckpointLoaderSimple.execute("tiny-sd15.safetensors").values
        pos = N.CLIPTextEncode.execute(prompt, clip).values[0]
        neg = N.CLIPTextEncode.execute("", clip).values[0]
        latent = N.EmptyLatentImage.execute(64, 64, 1).values[0]
        out = N.KSampler.execute(model, seed, steps, cfg, "ddim", "simple", pos, neg, latent, 1.0).values[0]
    return out["samples"]


def test_single_file_sd15_through_checkpoint_loader_matches_diffusers_pipeline(sd15, tmp_path: Path) -> None:
    """Same weights, seed and sampler: KSampler(ddim, simple) vs StableDiffusionPipeline + DDIMScheduler
    (trailing spacing = ComfyUI's "simple" timesteps 999, 799, ...; set_alpha_to_one so the last step
    lands on sigma = 0 like our schedules). Weights are bit-identical after conversion and both run float32;
    the remaining gap is the order of operations (EDM space vs DDPM space, CFG on x0 vs eps). With random
    weights the latents reach |x| ~ 47 and the measured gap is 2.0e-4 absolute (4e-6 relative, ~30 float32
    ulps after 10 UNet calls): rtol = atol = 1e-4 bounds it elementwise with a 20x margin at |x| ~ 47 and
    still fails on any real mapping error (a swapped or missing tensor moves latents by O(1))."""
    unet, vae, text, ldm = sd15
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    save_file(ldm, str(tmp_path / "models" / "checkpoints" / "tiny-sd15.safetensors"))
    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out")
    ours = _run_nodes(paths, "a red cube on a table", seed=7, steps=5, cfg=7.5)

    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=_clip_tokenizer_from_gz(tmp_path),
                                             unet=unet, scheduler=scheduler, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(7))   # ComfyUI's noise convention
    ref = pipe("a red cube on a table", negative_prompt="", num_inference_steps=5, guidance_scale=7.5,
               height=64, width=64, latents=noise, output_type="latent").images
    assert ours.abs().max() > 0.1                                   # a real latent, not an empty result
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------- file safety


def test_truncated_safetensors_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.randn(64, 64)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelFileError, match=r"model\.safetensors.*truncated"):
        read_state_dict(path)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 32)
    with pytest.raises(ModelFileError, match=r"junk\.safetensors.*corrupt"):
        read_state_dict(path)


def test_pickle_checkpoints_are_refused_unless_opted_in(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FEWSTEP_ALLOW_PICKLE", raising=False)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(ModelFileError, match=r"old\.ckpt.*refusing to load a pickle"):
        read_state_dict(path)
    loaded = read_state_dict(path, allow_pickle=True)
    assert torch.equal(loaded["w"], torch.ones(2))
    monkeypatch.setenv("FEWSTEP_ALLOW_PICKLE", "1")
    assert torch.equal(read_state_dict(path)["w"], torch.ones(2))


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_opted_in_pickle_still_rejects_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": _Payload()}, path)
    with pytest.raises(ModelFileError, match=r"evil\.pt.*weights_only"):
        read_state_dict(path, allow_pickle=True)


def test_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    from fewstep.nodes.core.loaders import sd

    with pytest.raises(ModelFileError, match="not a Stable Diffusion single-file checkpoint"):
        sd.detect({"foo.weight": torch.zeros(1)})


def test_tokenizer_gives_openai_clip_ids() -> None:
    """Ids of OpenAI's released CLIP vocabulary (what every SD checkpoint's token embedding is indexed by):
    "a" is 320 and "!" is 0, single characters included, not only merged words."""
    from fewstep.nodes.core.text import ClipTokenizer

    ids = ClipTokenizer()("a photo of a cat")
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and ids[7:] == [49407] * 70
    assert ClipTokenizer().encoder["!"] == 0 and ClipTokenizer(pad_id=0)("a")[3:5] == [0, 0]
