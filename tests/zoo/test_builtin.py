"""Shipped built-in weights: they load offline with their documented configs and do their jobs.

Skipped (with the reason) only while ``fewstep/nodes/zoo/weights/`` holds no trained files.
"""

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fewstep.nodes.zoo import builtin, data, models  # noqa: E402

W = builtin.weights_dir()


def _need(name: str) -> None:
    if not (W / name).is_file():
        pytest.skip(f"{name} not trained yet (run `python -m fewstep.nodes.zoo.train all` on a GPU)")


def _renders(n: int, seed: int) -> tuple[torch.Tensor, list[data.Scene]]:
    scenes = data.make_split("heldout", n, seed=seed)
    imgs = torch.stack([torch.from_numpy(np.array(data.render(s))) for s in scenes])
    return imgs.float() / 255.0, scenes  # [B,64,64,3]


def test_every_weight_file_is_under_16_mib():
    files = list(W.glob("*.safetensors"))
    if not files:
        pytest.skip("no built-in weights trained yet")
    assert all(f.stat().st_size < 16 * 2**20 for f in files), [(f.name, f.stat().st_size) for f in files]
    assert all(f.with_suffix(".md").is_file() and f.with_suffix(".json").is_file() for f in files)


def test_teacher_bundle_has_documented_config():
    _need(builtin.BUILTIN_CHECKPOINT)
    assert builtin.list_builtin_checkpoints() == [builtin.BUILTIN_CHECKPOINT]
    b = builtin.load_builtin(builtin.BUILTIN_CHECKPOINT)
    cfg = json.loads((W / "fewstep-tiny-teacher.json").read_text())
    assert cfg["unet"] == models.UNET_CONFIG and b.schedule == models.SCHEDULE
    assert b.prediction_type == "epsilon" and b.image_size == 64 and b.latent_channels == 4
    assert 0.1 < b.vae_scaling_factor < 10
    assert b.unet.config.cross_attention_dim == 384 and b.unet.config.sample_size == 16
    z = torch.randn(1, 4, 16, 16)
    states, _ = b.text_encoder.encode(["a small red circle at the top"])
    with torch.no_grad():
        eps = b.unet(z, torch.tensor([999]), encoder_hidden_states=states).sample
        img = b.vae.decode(z).sample
    assert eps.shape == z.shape and img.shape == (1, 3, 64, 64)
    # at t=999 x_t is almost pure noise, so a trained eps-predictor returns roughly its input
    assert torch.nn.functional.cosine_similarity(eps.flatten(), z.flatten(), dim=0) > 0.9


def test_vae_reconstructs_renders():
    _need(builtin.VAE_FILE)
    vae, _ = builtin.load_vae()
    x, _ = _renders(8, seed=11)
    with torch.no_grad():
        rec = (vae.decode(vae.encode(x.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean).sample + 1) / 2
    mse = ((rec.clamp(0, 1) - x.permute(0, 3, 1, 2)) ** 2).mean()
    assert 10 * torch.log10(1 / mse) > 25  # an untrained VAE gives ~10 dB; the card reports the trained value


def test_probe_reads_fresh_renders():
    _need(builtin.PROBE_FILE)
    probe = builtin.load_probe()
    x, scenes = _renders(32, seed=12)
    acc = probe.attribute_accuracy(x, scenes)
    # chance is ~1/6 per attribute (1/6 colours, 1/5 shapes); a trained probe reads renders near-perfectly.
    # 0.9 leaves room for a few hard objects among 32 scenes while failing any broken or shuffled reader.
    assert acc > 0.9, acc
    wrong = [data.Scene(tuple(o.__class__(o.shape, "red" if o.colour != "red" else "blue", o.size, o.row, o.col)
                              for o in s.objects), s.kind) for s in scenes]
    assert probe.evaluate(x, wrong)["colour_accuracy"] < 0.2  # every colour changed: must be scored wrong


def test_scorer_prefers_true_caption_over_one_attribute_change():
    _need(builtin.SCORER_FILE)
    import random

    scorer = builtin.load_scorer()
    x, scenes = _renders(16, seed=13)
    rng = random.Random(0)
    true = scorer.score(x, [data.caption(s) for s in scenes])
    neg = scorer.score(x, [data.caption(data.perturb(s, rng)) for s in scenes])
    assert (true > neg).float().mean() >= 0.75  # chance is 0.5; the card reports the held-out rate
    xg = x.clone().requires_grad_(True)
    scorer.score(xg[:2], [data.caption(s) for s in scenes[:2]]).sum().backward()
    assert xg.grad.abs().sum() > 0  # differentiable in the images (reward use)


def test_unknown_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown built-in checkpoint"):
        builtin.load_builtin("nope.safetensors")
    with pytest.raises(FileNotFoundError, match="missing"):
        builtin.load_builtin(builtin.BUILTIN_CHECKPOINT, root=tmp_path)
    assert builtin.list_builtin_checkpoints(tmp_path) == []


def test_compare_scenes_scores_slots_in_reading_order():
    # pure logic, no weights: "A left of B" read back with A and B swapped gets both slots wrong
    target = data.parse_caption("a small red circle left of a large blue square")
    swapped = data.parse_caption("a large blue square left of a small red circle")
    assert builtin.compare_scenes(target, target) == {"objects": 2, "colour": 2, "shape": 2, "count": 1}
    assert builtin.compare_scenes(swapped, target) == {"objects": 2, "colour": 0, "shape": 0, "count": 1}
    one = data.parse_caption("a small red circle at the top left")
    assert builtin.compare_scenes(one, target) == {"objects": 2, "colour": 1, "shape": 1, "count": 0}  # missing slot
