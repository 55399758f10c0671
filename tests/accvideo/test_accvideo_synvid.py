"""SynVid's stored points are the teacher's 50-step flow-Euler trajectory; an interrupted build resumes exactly."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from fewstep.nodes.accvideo.keypoints import KEY_INDICES
from fewstep.nodes.accvideo.synvid import SynVidSpec, SynVidStore, build_synvid, shard_inputs
from fewstep.nodes.core.video_sampling import shifted_sigmas

PROMPTS = ["a small red circle moving right", "a large blue square bouncing"]


def _euler_by_hand(model, noise, prompt, cfg):
    """50 Euler steps at shift 7 written out, guided velocity v_u + cfg (v_c - v_u) straight from the DiT."""
    ctx, mask = model.encode_text([prompt])
    unc, umask = model.encode_text([""])
    sig = 1 - torch.arange(51, dtype=torch.float64) / 50
    sig = (7 * sig / (1 + 6 * sig)).float()
    x, points = noise[None].clone(), {}
    for i in range(50):
        if i in KEY_INDICES:
            points[i] = x[0].clone()
        t = sig[i].reshape(1) * 1000
        v_c = model.dit(x, t, ctx, mask)
        v_u = model.dit(x, t, unc, umask)
        x = x + (sig[i + 1] - sig[i]) * (v_u + cfg * (v_c - v_u))
    points[50] = x[0]
    return torch.stack([points[i] for i in KEY_INDICES])


def test_stored_points_are_the_teachers_euler_trajectory(tiny_model, tmp_path) -> None:
    spec = SynVidSpec(count=3, shard_size=2, frames=2, cfg=3.0, teacher=tiny_model.name)
    store = build_synvid(SynVidStore(tmp_path / "syn"), spec, PROMPTS, tiny_model, batch_size=2)
    data = store.load()
    assert data["points"].shape == (3, 6, 2, 4, 8, 8) and data["prompt_index"].shape == (3,)
    noise, index = shard_inputs(spec, 1, len(PROMPTS), (4, 8, 8))                  # trajectory 2 = shard 1, row 0
    assert torch.equal(data["points"][2, 0], noise[0])                             # point 0 is the noise itself
    again = _euler_by_hand(tiny_model, noise[0], PROMPTS[int(index[0])], 3.0)
    assert torch.allclose(data["points"][2], again, atol=1e-5)
    assert torch.allclose(shifted_sigmas(50, 7.0)[list(KEY_INDICES)][1], torch.tensor(0.965517), atol=1e-6)
    # the clip moved: the last point is far from the noise
    assert (data["points"][2, -1] - data["points"][2, 0]).abs().mean() > 0.1


def test_build_resumes_at_the_missing_shard(tiny_model, tmp_path) -> None:
    spec = SynVidSpec(count=4, shard_size=2, steps=10, indices=(0, 5, 10), frames=1, teacher=tiny_model.name)
    store = build_synvid(SynVidStore(tmp_path / "syn"), spec, PROMPTS, tiny_model)
    first = load_file(str(store.shard_path(1)))
    store.shard_path(1).unlink()
    calls: list[int] = []
    build_synvid(store, spec, PROMPTS, tiny_model, progress=lambda j, n: calls.append(j))
    assert calls == [2]                                                            # only shard 1 was rebuilt
    assert torch.equal(load_file(str(store.shard_path(1)))["points"], first["points"])


def test_procedural_captions_are_training_captions_only() -> None:
    from fewstep.nodes.accvideo.graph import training_captions
    from fewstep.nodes.zoo.video import clips

    texts = training_captions("procedural", "", 400, seed=0)
    assert len(texts) == len(clips.split_captions("train"))            # 400 draws cover the 321 captions
    assert not any(clips.is_heldout(t) for t in texts)
    assert training_captions("list", " a\n\nb \n", 5, 0) == ["a", "b"]
