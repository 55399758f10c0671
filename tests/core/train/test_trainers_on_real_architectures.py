"""Every trainer node, forward and backward, on tiny random SD1.5- and SDXL-architecture checkpoints (issue #13
item 6).

The checkpoints are the real single-file layouts (``tests/core/sd_fixtures.py``) loaded by the core loader, so the
trainers get what a user's graph gives them: MODEL (``Denoiser`` + ``UNetFn``) and CLIP (one CLIP-L tower for
SD1.5; CLIP-L + OpenCLIP-G for SDXL, whose UNet also takes the pooled text embedding and the six size / crop
numbers as ``added_cond_kwargs``). Each case runs the trainer node's ``execute`` (the code path of a graph) for
one optimizer step at batch 2 on two prompts, LoRA rank 2, and checks:

* the loss is finite;
* the LoRA adapters were trained: the returned MODEL's cross-attention keys (LoRA targets, merged back into
  the plain UNet) moved away from the teacher's, while the teacher itself is untouched;
* the trained MODEL samples under the sampling nodes' CONDITIONING exactly as it was trained: a one-step
  Euler KSampler from σ_max returns D(σ_max ε, σ_max) = x̂0, which must equal the training view's x̂0 of the
  same state under ``encode_prompts`` (for SDXL this pins the pooled embedding and the time ids, whose
  image size follows the latent size).

Tiny settings, each the smallest real one:
* the loader takes ``sample_size`` from the bundled configs of the real models (SD1.5 64, SDXL 128 latents),
  which is what the trainers draw latents at; the fixture sets the tiny UNets' to 8 (64 px through the ×8
  VAE, the built-in scorer's native size: R0's and online PSO's rewards see exactly what they were built for);
* MLCM stage 2 refines "a stage-1 student": the teacher stands in for it (same network, so no extra run);
* offline PSO's concept images are two random 64×64 IMAGEs (they encode to the student's 8×8 latents) with
  two reference negatives.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from sd_fixtures import tiny_sd15, tiny_sdxl, to_ldm_checkpoint, to_ldm_unet, to_ldm_vae, to_open_clip

from fewstep.app.api import Node, Paths, use_paths
from fewstep.nodes.core.train.vp import (
    Conditioning,
    cat_batch,
    cat_cond,
    expand_batch,
    repeat_batch,
)

pytest.importorskip("diffusers")
pytest.importorskip("peft")

ARCHS = ("sd15", "sdxl")
PROMPT = "a red circle"
SMALL = dict(prompt_source="list", prompts=f"{PROMPT}\na blue square", prompt_count=2, steps=1, batch_size=2,
             lora_rank=2, checkpoint_every=0, preview_every=0, seed=0)


def _nodes() -> dict[str, tuple[type[Node], dict[str, Any]]]:
    """method -> (trainer node, widget values beyond SMALL); rewards are the built-in zoo scorer."""
    from fewstep.nodes.core.rewards import ScorerReward
    from fewstep.nodes.mlcm.nodes import MLCMDistill
    from fewstep.nodes.pso.nodes import PSOOffline, PSOOnline
    from fewstep.nodes.r0.nodes import R0Train
    from fewstep.nodes.slam.nodes import SLAMDistill
    from fewstep.nodes.tdm.nodes import TDMDistill

    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    return {
        "mlcm_stage1": (MLCMDistill, dict(segments=4)),
        "mlcm_stage2": (MLCMDistill, dict(stage="2: progressive (between milestones)", segments=4, student_steps=2)),
        "lcm": (MLCMDistill, dict(segments=1)),
        "slam": (SLAMDistill, dict(gamma_dim=8)),
        "tdm": (TDMDistill, dict(unify=False, student_steps=2)),
        "tdm_unify": (TDMDistill, dict(unify=True, student_steps=2)),
        "r0": (R0Train, dict(reward_1=ScorerReward(), sampler_steps=2)),
        "pso_online": (PSOOnline, dict(reward_model=ScorerReward(), sample_steps=2)),
        "pso_offline": (PSOOffline, dict(images=images, prompt=PROMPT, sample_steps=2, num_negatives=2)),
    }


METHODS = ("mlcm_stage1", "mlcm_stage2", "lcm", "slam", "tdm", "tdm_unify", "r0", "pso_online", "pso_offline")


def _sdxl_checkpoint() -> dict[str, torch.Tensor]:
    """tests/core/test_sdxl.py's tiny SDXL file: its UNet and two towers, with the tiny SD1.5 VAE (×8)."""
    unet, clip_l, clip_g = tiny_sdxl()
    ldm = to_ldm_unet(unet.state_dict(), [t.startswith("CrossAttn") for t in unet.config.up_block_types])
    ldm.update(to_ldm_vae(tiny_sd15()[1].state_dict(), 4))
    ldm.update({"conditioner.embedders.0.transformer.text_model." + k.removeprefix("text_model."): v
                for k, v in clip_l.state_dict().items()})
    ldm.update({"conditioner.embedders.1.model." + k: v for k, v in to_open_clip(clip_g).items()})
    return {k: v.contiguous() for k, v in ldm.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Any, Any, dict[str, torch.Tensor]]]:
    """arch -> (MODEL, CLIP, VAE, a copy of the teacher UNet's weights), loaded from single files by the core loader."""
    from fewstep.nodes.core.nodes import CheckpointLoaderSimple

    root = tmp_path_factory.mktemp("tiny-checkpoints")
    (root / "checkpoints").mkdir()
    save_file(to_ldm_checkpoint(*tiny_sd15()), str(root / "checkpoints" / "sd15.safetensors"))
    save_file(_sdxl_checkpoint(), str(root / "checkpoints" / "sdxl.safetensors"))
    out = {}
    with use_paths(Paths(model_roots=(root,))):
        for arch in ARCHS:
            model, clip, vae = CheckpointLoaderSimple.execute(f"{arch}.safetensors").values
            assert model.extras["arch"] == ("sd1" if arch == "sd15" else "sdxl") and len(clip.encoders) == (
                1 if arch == "sd15" else 2)
            model.model_fn.unet.register_to_config(sample_size=8)      # see the module docstring
            weights = {k: v.clone() for k, v in model.model_fn.unet.state_dict().items()}
            out[arch] = (model, clip, vae, weights)
    return out


def _train(node: type[Node], inputs: dict[str, Any], tmp_path: Path) -> tuple[Any, list[float]]:
    """Run a trainer node with its widget defaults, the tiny settings and ``inputs``; (MODEL, losses)."""
    defaults = {i.name: i.default for i in node.define_schema().inputs if i.default is not None}
    with use_paths(Paths(model_roots=(tmp_path / "models",), output_dir=tmp_path / "out")):
        out = node.execute(**(defaults | SMALL | inputs))
    return out.values[0], out.ui["loss"]


def _moved(student_unet: torch.nn.Module, teacher: dict[str, torch.Tensor]) -> float:
    """Largest change of the cross-attention key projections (LoRA targets) against the teacher's weights."""
    state = student_unet.state_dict()
    keys = [k for k in teacher if k.endswith("attn2.to_k.weight") and k in state]
    assert keys
    return max(float((state[k].float() - teacher[k].float()).abs().max()) for k in keys)


def _one_step_sample_matches_training_view(student: Any, clip: Any) -> None:
    """KSampler (1 Euler step from σ_max, the sampling nodes' CONDITIONING) == the training view's x̂0."""
    from fewstep.nodes.core import nodes as N
    from fewstep.nodes.core.sampling import RandomNoiseSpec
    from fewstep.nodes.core.train.adapter import encode_prompts, teacher_view

    positive = N.CLIPTextEncode.execute(PROMPT, clip).values[0]
    latent = N.EmptyLatentImage.execute(64, 64, 1).values[0]                       # [1, 4, 8, 8]
    sampled = N.KSampler.execute(student, 7, 1, 1.0, "euler", "simple", positive, positive, latent, 1.0).values[0]
    # From the top of a VP schedule the sampler starts at x = sqrt(1 + σ_max²) ε (unit-variance DDPM noise,
    # Denoiser.noise_latent) and one Euler step to 0 lands on x̂0 = D(x, σ_max); in the DDPM view that state is
    # x_t = α_t x = ε at t = T - 1.
    view = teacher_view(student)
    t = torch.tensor([view.schedule.num_timesteps - 1])
    eps = RandomNoiseSpec(7).generate(latent)
    with torch.no_grad():
        x0, _ = view.x0_eps(eps, t, encode_prompts(clip, [PROMPT], (8, 8)))
    # float32 round-off, amplified by 1/α_999 ≈ 15 in x̂0 = (x - σ ε̂)/α on |x̂0| up to ~50: measured ≤ 3e-5
    torch.testing.assert_close(sampled["samples"], x0, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_trainer_steps_and_its_student_samples_on_a_tiny_real_architecture(tiny, tmp_path, arch, method) -> None:
    model, clip, vae, teacher_weights = tiny[arch]
    node, inputs = _nodes()[method]
    inputs = dict(inputs, model=model, clip=clip, vae=vae, run_name=f"{arch}-{method}")
    if method == "mlcm_stage2":
        inputs["student"] = model
    student, losses = _train(node, inputs, tmp_path)
    assert len(losses) == 1 and math.isfinite(losses[0]), losses
    assert _moved(student.model_fn.unet, teacher_weights) > 0.0, "no gradient reached the LoRA adapters"
    teacher_now = model.model_fn.unet.state_dict()
    assert all(torch.equal(teacher_now[k], v) for k, v in teacher_weights.items()), "the teacher was trained"
    _one_step_sample_matches_training_view(student, clip)


def test_an_sdxl_unet_with_plain_token_states_is_a_clear_error(tiny) -> None:
    from fewstep.nodes.core.train.prompts import make_pool

    with pytest.raises(TypeError, match="SDXL CLIP"):
        make_pool(tiny["sdxl"][0], tiny["sd15"][1], [PROMPT], None, "cpu")


def test_conditioning_batches_row_for_row_like_each_of_its_tensors() -> None:
    gen = torch.Generator().manual_seed(0)
    fields = {"hidden": torch.randn(3, 5, 4, generator=gen), "text_embeds": torch.randn(3, 2, generator=gen),
              "time_ids": torch.randn(3, 6, generator=gen)}
    cond = Conditioning(fields["hidden"], {k: fields[k] for k in ("text_embeds", "time_ids")})
    uncond = cond[:1]

    def check(got: Conditioning, want: dict[str, torch.Tensor]) -> None:
        assert torch.equal(got.hidden_states, want["hidden"])
        assert all(torch.equal(got.added_cond_kwargs[k], want[k]) for k in ("text_embeds", "time_ids"))

    check(repeat_batch(cond, 2), {k: torch.cat([v, v]) for k, v in fields.items()})
    check(expand_batch(uncond, 4), {k: v[:1].expand(4, *v.shape[1:]) for k, v in fields.items()})
    check(cat_batch([cond, uncond]), {k: torch.cat([v, v[:1]]) for k, v in fields.items()})
    check(cat_cond(cond, uncond), {k: torch.cat([v, v[:1].expand_as(v)]) for k, v in fields.items()})
    check(cond[torch.tensor([2, 0])], {k: v[[2, 0]] for k, v in fields.items()})
    # the tensor path is the plain torch op
    hidden = fields["hidden"]
    assert torch.equal(repeat_batch(hidden, 2), torch.cat([hidden, hidden]))
    assert torch.equal(expand_batch(hidden[:1], 3), hidden[:1].expand(3, -1, -1))
    assert torch.equal(cat_cond(hidden, hidden[:1]), torch.cat([hidden, hidden[:1].expand_as(hidden)]))
    with pytest.raises(TypeError, match="mixed"):
        cat_batch([cond, hidden])


LONG_PROMPT = ", ".join(["a small red circle above a large blue square"] * 12)  # > 77 CLIP tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_prompts_longer_than_one_window_share_a_pool_with_short_ones(tiny, arch) -> None:
    """A long prompt encodes to 154+ tokens: the pool repeats shorter token states to the common length
    (ComfyUI's batching rule), which leaves every UNet output unchanged."""
    from fewstep.nodes.core.train.adapter import encode_prompts, teacher_view

    model, clip = tiny[arch][0], tiny[arch][1]
    both = encode_prompts(clip, [PROMPT, LONG_PROMPT], (8, 8))
    short = encode_prompts(clip, [PROMPT], (8, 8))
    assert both.shape[1] % 77 == 0 and both.shape[1] > 77 and short.shape[1] == 77
    view = teacher_view(model)
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([500])
    with torch.no_grad():
        alone, _ = view.x0_eps(x, t, short)
        in_pool, _ = view.x0_eps(x, t, both[:1])
    torch.testing.assert_close(in_pool, alone, rtol=1e-4, atol=1e-5)      # float32 softmax over repeated keys
