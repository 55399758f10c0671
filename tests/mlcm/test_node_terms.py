"""MLCMDistill on the built-in teacher, one optimizer step: the preference term with the real zoo scorer,
and the dataset prompt source with real-latent states (procedural scenes rendered by the zoo as the dataset)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from fewstep.app.api import Paths, use_paths

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("diffusers")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def teacher():
    from fewstep.nodes.core.nodes import CheckpointLoaderSimple

    return CheckpointLoaderSimple.execute("fewstep-tiny-teacher.safetensors").values   # MODEL, CLIP, VAE


def _distill(tmp_path: Path, teacher, **over):
    """One MLCMDistill step (batch 2) with the example graph's widget values; returns (student MODEL, losses)."""
    from fewstep.nodes.mlcm.nodes import MLCMDistill

    model, clip, vae = teacher
    inputs = json.loads((ROOT / "graphs" / "mlcm_distill.json").read_text())["10"]["inputs"]
    inputs |= dict(model=model, clip=clip, vae=vae, steps=1, batch_size=2, prompt_count=4, checkpoint_every=0,
                   preview_every=0, run_name="t") | over
    paths = Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out", temp_dir=tmp_path / "temp",
                  input_dir=tmp_path / "in", user_dir=tmp_path / "user")
    with use_paths(paths):
        out = MLCMDistill.execute(**inputs)
    return out.values[0], out.ui["loss"]


@pytest.fixture(scope="module")
def plain_run(teacher, tmp_path_factory):
    """The reference step with both terms off (the defaults)."""
    return _distill(tmp_path_factory.mktemp("off"), teacher)


def _params(student) -> torch.Tensor:
    from fewstep.nodes.core.train.adapter import unet_of

    return torch.cat([p.detach().float().flatten() for p in unet_of(student).parameters()])


def test_preference_weight_adds_the_scorer_hinge_and_changes_the_update(tmp_path, teacher, plain_run):
    off_model, off = plain_run
    on_model, on = _distill(tmp_path / "on", teacher, reward_weight=1.0, reward_margin=1.0)
    # same seed ⇒ same batch and states; the hinge relu(1 - cosine) of an imperfect image is > 0
    assert len(on) == len(off) == 1
    assert on[0] > off[0] + 1e-3, (on, off)
    assert not torch.equal(_params(on_model), _params(off_model))
    zero_model, zero = _distill(tmp_path / "zero", teacher, reward_weight=0.0, reward_margin=0.2)
    assert zero == off and torch.equal(_params(zero_model), _params(off_model))


def test_perceptual_weight_adds_the_effnet_feature_distance(tmp_path, teacher, plain_run):
    off_model, off = plain_run
    on_model, on = _distill(tmp_path / "on", teacher, perceptual_weight=1.0)
    # pred and target differ (x_tm vs the teacher's x_tn), so their EffNet features differ too
    assert on[0] > off[0], (on, off)
    assert not torch.equal(_params(on_model), _params(off_model))


def test_terms_without_a_vae_are_a_clear_error(tmp_path, teacher):
    with pytest.raises(ValueError, match="need the VAE input"):
        _distill(tmp_path, teacher, vae=None, perceptual_weight=0.5)


def _scene_dataset(n: int) -> tuple[list[dict], list[str]]:
    """``n`` procedural scenes rendered at 64 px (16x16 latents: the built-in VAE downsamples 4x) with their captions."""
    import numpy as np

    from fewstep.nodes.zoo import data

    scenes = data.make_split("train", n, seed=5)
    items = [{"image": torch.from_numpy(np.asarray(data.render(s, 64), dtype=np.float32) / 255.0),
              "prompt": data.caption(s)} for s in scenes]
    return items, [data.caption(s) for s in scenes]


def test_dataset_prompts_and_latents_come_from_the_dataset(teacher):
    from fewstep.nodes.core.train.prompts import dataset_latents, prompt_list

    _, _, vae = teacher
    items, captions = _scene_dataset(3)
    assert prompt_list("dataset", "ignored", 99, 0, items) == captions
    latents = dataset_latents(items, vae)
    assert latents.shape == (3, 4, 16, 16)
    assert torch.allclose(latents[1], vae.encode(items[1]["image"][None])[0])
    assert torch.equal(dataset_latents([{"latent": latents[0], "prompt": "x"}], None), latents[:1])
    with pytest.raises(ValueError, match="connect a VAE"):
        dataset_latents(items, None)
    with pytest.raises(ValueError, match="needs the dataset input"):
        prompt_list("dataset", "", 1, 0, None)


def test_node_trains_on_a_dataset_with_real_latent_states(tmp_path, teacher):
    items, _ = _scene_dataset(3)
    _, real = _distill(tmp_path / "real", teacher, prompt_source="dataset", state_source="real", dataset=items)
    _, data_free = _distill(tmp_path / "free", teacher, prompt_source="dataset", state_source="teacher",
                            dataset=items)
    assert len(real) == 1 and torch.isfinite(torch.tensor(real)).all()
    assert real != data_free                      # the states came from the dataset's latents, not the teacher


def test_effnet_perceptual_map_is_differentiable_in_the_latents(teacher):
    from fewstep.nodes.mlcm.terms import zoo_terms

    _, _, vae = teacher
    phi, reward = zoo_terms(0.5, 0.0, vae, "cpu")
    assert reward is None
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    feats = phi(latents)
    assert feats.shape == (2, 1280, 7, 7)
    feats.square().mean().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0     # the term reaches the student's output
    assert zoo_terms(0.0, 0.0, None, "cpu") == (None, None)               # off: nothing loaded, no VAE needed
