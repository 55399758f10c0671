"""The triplane generator and the PRD loop: PETA's plane-specific vs shared LoRA, the K-step timesteps, no
gradient across PRD steps, and a resumed run replaying an uninterrupted one."""

from __future__ import annotations

import torch

from fewstep.nodes.prd.asd import ASDLoss
from fewstep.nodes.prd.generator import (
    GeneratorConfig,
    LoRALinear,
    TriplaneGenerator,
    generate,
    prd_timesteps,
)
from fewstep.nodes.prd.train import PRDConfig, build_generator, prd_iteration, train_prd

TINY = dict(batch=1, views=2, render_size=8, samples=6, lr=1e-2)


def _lora_layers(gen: TriplaneGenerator) -> list[LoRALinear]:
    return [m for m in gen.unet.modules() if isinstance(m, LoRALinear)]


def test_prd_timesteps_follow_the_shifted_ddpm_grid():
    assert prd_timesteps(4) == [999, 749, 499, 249]
    assert prd_timesteps(2) == [999, 499]
    assert prd_timesteps(1) == [999]


def test_plane_specific_lora_has_separate_parameters_per_plane_and_shared_does_not(tiny_multiview_teacher):
    specific = TriplaneGenerator(tiny_multiview_teacher.unet, GeneratorConfig(lora="plane-specific", rank=2))
    shared = TriplaneGenerator(tiny_multiview_teacher.unet, GeneratorConfig(lora="shared", rank=2))
    assert _lora_layers(specific) and len(_lora_layers(specific)) == len(_lora_layers(shared))
    assert all(m.lora_A.shape[0] == 3 and m.lora_B.shape[0] == 3 for m in _lora_layers(specific))
    assert all(m.lora_A.shape[0] == 1 and m.lora_B.shape[0] == 1 for m in _lora_layers(shared))
    # the attention projections see tokens of 3 planes (plane-major): moving plane 0's up-projection changes
    # only plane 0's outputs in the plane-specific layer, every plane's in the shared one
    x = torch.randn(2, 3 * 5, _lora_layers(specific)[0].base.in_features)
    for layer, planes_changed in ((_lora_layers(specific)[0], {0}), (_lora_layers(shared)[0], {0, 1, 2})):
        before = layer(x).detach()
        with torch.no_grad():
            layer.lora_B[0].add_(1.0)
        diff = (layer(x).detach() - before).reshape(2, 3, 5, -1).abs().amax(dim=(0, 2, 3))
        assert {p for p in range(3) if diff[p] > 1e-6} == planes_changed
    # only adapters, head and decoder train; the teacher's weights stay frozen
    names = [n for n, p in specific.named_parameters() if p.requires_grad]
    assert all("lora_" in n or n.startswith(("head.", "decoder.")) for n in names)


def test_untrained_generator_equals_the_teacher_unet(tiny_multiview_teacher):
    """LoRA's zero init: before training the adapted UNet computes the teacher's ε per plane (P = 1 view)."""
    gen = TriplaneGenerator(tiny_multiview_teacher.unet, GeneratorConfig(rank=2))
    z = torch.randn(2, 3, 3, 8, 8)
    text = torch.randn(2, 8)
    eps, _ = gen.denoise(z, torch.tensor([500, 700]), text)
    from fewstep.nodes.zoo.multiview.models import set_planes

    set_planes(gen.unet, 3)
    ref_unet = tiny_multiview_teacher.unet
    set_planes(ref_unet, 3)
    ref = ref_unet(z.reshape(6, 3, 8, 8), torch.tensor([500, 500, 500, 700, 700, 700]), text.repeat_interleave(3, 0))
    set_planes(ref_unet, 1)
    torch.testing.assert_close(eps.reshape(6, 3, 8, 8), ref, rtol=1e-5, atol=1e-5)


def test_no_gradient_flows_across_prd_steps(tiny_multiview_teacher):
    cfg = PRDConfig(k=4, **TINY)
    gen = build_generator(tiny_multiview_teacher, cfg)
    hits: dict[int, int] = {}

    def on_step(i: int, x0: torch.Tensor) -> None:
        x0.register_hook(lambda g, i=i: hits.__setitem__(i, hits.get(i, 0) + 1))

    loss = prd_iteration(gen, tiny_multiview_teacher, ASDLoss(), torch.randn(1, 8), cfg, 0.0,
                         torch.Generator().manual_seed(0), on_step=on_step)
    assert hits == {0: 1, 1: 1, 2: 1}           # steps 1..K-1 backpropagated inside, once each
    loss.backward()                             # the last step's graph reaches only its own x̂0
    assert hits == {0: 1, 1: 1, 2: 1, 3: 1}
    assert all(p.grad is not None for n, p in gen.named_parameters() if p.requires_grad and "lora_B" in n)


def test_generate_is_deterministic_and_follows_the_text(tiny_multiview_teacher):
    gen = TriplaneGenerator(tiny_multiview_teacher.unet, GeneratorConfig(rank=2, resolution=8)).eval()
    noise, text = torch.randn(1, *gen.latent_shape), torch.randn(1, 8)
    a, b = generate(gen, text, 2, noise), generate(gen, text, 2, noise)
    assert a.planes.shape == (1, 3, 8, 8, 8)
    torch.testing.assert_close(a.planes, b.planes, rtol=0, atol=0)
    assert not torch.allclose(generate(gen, -text, 2, noise).planes, a.planes)


def test_resumed_run_replays_the_uninterrupted_one(tiny_multiview_teacher, tmp_path):
    from fewstep.nodes.core.train.loop import Checkpointer

    captions = ["a red cube", "a blue sphere"]
    table = torch.randn(2, 8)

    def embed(texts: list[str]) -> torch.Tensor:
        return table[[captions.index(c) for c in texts]]

    cfg = PRDConfig(k=2, steps=3, **TINY)
    full = build_generator(tiny_multiview_teacher, cfg)
    uninterrupted = train_prd(full, tiny_multiview_teacher, captions, embed, cfg)
    ckpt = Checkpointer(tmp_path / "run", every=1, keep=5)
    train_prd(build_generator(tiny_multiview_teacher, cfg), tiny_multiview_teacher, captions, embed, cfg, checkpointer=ckpt)
    ckpt.latest().unlink()                                       # as if stopped after step 2
    resumed_gen = build_generator(tiny_multiview_teacher, cfg)
    resumed = train_prd(resumed_gen, tiny_multiview_teacher, captions, embed, cfg, checkpointer=ckpt)
    assert resumed.resumed_from == 2 and resumed.step == 3
    assert resumed.losses == uninterrupted.losses
    for (name, p), q in zip(full.named_parameters(), resumed_gen.parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
