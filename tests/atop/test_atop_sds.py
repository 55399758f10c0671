"""ATOP score distillation: the SDS gradient against its analytic form on a point-mass toy, the personalised
video DiT (only LoRA trains, the base stays frozen, resume replays an uninterrupted run), and the fit / fit node
under guidance=sds on a tiny case."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fewstep.nodes.atop.evidence import EvidenceConfig, MotionEvidence, render_evidence
from fewstep.nodes.atop.fit import FitConfig, fit_articulation
from fewstep.nodes.atop.motion import (
    FLOW_MULTIPLIER,
    MotionPrior,
    PersonaliseConfig,
    encode,
    personalise,
    sds_loss,
)
from fewstep.nodes.atop.objects import make_object
from fewstep.nodes.zoo.video.dit import PRESETS, VideoDiT


class _StubVAE(nn.Module):
    """A linear 'encoder': 64 px RGB → [4, 16, 16] by taking every 4th pixel (channel 0 twice)."""

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        sub = x[:, :, ::4, ::4]
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=torch.cat([sub, sub[:, :1]], 1)))


class _PointMassDiT(nn.Module):
    """The exact velocity of data concentrated at z*: v(x, σ) = (x − z*) / σ."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target
        self.calls = 0

    def forward(self, x, timestep, context, mask):
        self.calls += 1
        sigma = (timestep / FLOW_MULTIPLIER).view(-1, 1, 1, 1, 1)
        return (x - self.target) / sigma


def _prior(dit: nn.Module) -> MotionPrior:
    return MotionPrior(dit, _StubVAE(), 1.0, torch.zeros(1, 2, 384), torch.ones(1, 2, dtype=torch.bool), "[V] toy")


def test_sds_surrogate_has_gradient_g():
    z = torch.randn(2, 3, 4, requires_grad=True)
    g = torch.randn(2, 3, 4)
    sds_loss(z, g).sum().backward()
    torch.testing.assert_close(z.grad, g)


def test_sds_gradient_on_the_render_equals_the_analytic_form():
    # point-mass data z*: ε̂ − ε = (1 − σ)/σ (z − z*), so ∂L/∂ψ = J^T (1 − σ)/σ (z − z*) / numel
    torch.manual_seed(0)
    target = torch.randn(1, 2, 4, 16, 16)
    prior = _prior(_PointMassDiT(target))
    psi = torch.rand(3, 2, 64, 64, 3, requires_grad=True)       # the rendered clips, as the parameters
    surrogate, _ = prior.sds_surrogate(psi, torch.Generator().manual_seed(7))
    surrogate.sum().backward()

    gen = torch.Generator().manual_seed(7)                       # the same draws, by hand
    lo, hi = prior.sigma_range
    sigma = (lo + (hi - lo) * torch.rand(3, generator=gen)).view(-1, 1, 1, 1, 1)
    psi2 = psi.detach().clone().requires_grad_(True)
    z = encode(prior.vae, 1.0, psi2)
    g = (1 - sigma) / sigma * (z.detach() - target)
    expected, = torch.autograd.grad((z * g).sum() / z[0].numel(), psi2)
    torch.testing.assert_close(psi.grad, expected, rtol=1e-4, atol=1e-7)
    assert psi.grad.abs().sum() > 0


class _TinyVideoModel:
    """What :func:`personalise` needs of a VideoModel: a DiT, a VAE, its scale and a text encoder."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.dit = VideoDiT(PRESETS["test"]).requires_grad_(False)
        with torch.no_grad():       # a 'trained' base: the fresh DiT's zero-initialised output layers pass no gradient
            for p in self.dit.parameters():
                p.add_(0.05 * torch.randn_like(p))
        self.vae, self.vae_scale = _StubVAE(), 1.0

    def encode_text(self, prompts):
        return torch.ones(len(prompts), 3, 384), torch.ones(len(prompts), 3, dtype=torch.bool)


def _clips() -> torch.Tensor:
    return torch.rand(3, 2, 64, 64, 3, generator=torch.Generator().manual_seed(1))


def test_personalise_trains_only_lora_and_leaves_the_base_frozen():
    model = _TinyVideoModel()
    before = {k: v.clone() for k, v in model.dit.state_dict().items()}
    prior, losses = personalise(model, _clips(), "[V] lid opening", PersonaliseConfig(steps=3, batch=2, rank=2))
    assert len(losses) == 3
    for k, v in model.dit.state_dict().items():             # the base model is untouched
        torch.testing.assert_close(v, before[k])
    lora = {k: v for k, v in prior.dit.state_dict().items() if "lora_" in k}
    assert lora and any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())   # B starts at zero
    for k, v in prior.dit.state_dict().items():             # every non-LoRA weight of the copy is the base's
        if "lora_" not in k:
            torch.testing.assert_close(v, before[k.replace(".base_layer.", ".")])
    assert not any(p.requires_grad for p in prior.dit.parameters())


def test_personalise_resumes_to_the_uninterrupted_run(tmp_path):
    config = PersonaliseConfig(steps=4, batch=2, rank=2)
    straight, _ = personalise(_TinyVideoModel(), _clips(), "[V] x", config)
    personalise(_TinyVideoModel(), _clips(), "[V] x", PersonaliseConfig(steps=2, batch=2, rank=2), tmp_path)
    resumed, losses = personalise(_TinyVideoModel(), _clips(), "[V] x", config, tmp_path)
    assert resumed.info["resumed_from"] == 2 and len(losses) == 4
    for (k, a), (_, b) in zip(straight.dit.state_dict().items(), resumed.dit.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=k)


def _tiny_case() -> tuple:
    mesh = make_object("box_lid", 0)
    evidence = render_evidence(mesh, EvidenceConfig(views=2, frames=2, size=16))
    prior = _prior(_PointMassDiT(torch.zeros(1, 2, 4, 16, 16)))
    return mesh, evidence, prior


def test_sds_fit_reads_only_the_evidence_cameras():
    mesh, evidence, prior = _tiny_case()
    noise = MotionEvidence(torch.rand_like(evidence.frames), torch.rand_like(evidence.masks), evidence.cameras)
    config = FitConfig(restarts=1, candidates=4, steps=3, guidance="sds", kinds=("revolute",))
    a = fit_articulation(mesh, "lid", evidence, config, prior=prior)
    b = fit_articulation(mesh, "lid", noise, config, prior=prior)
    assert a.best == b.best and prior.dit.calls > 0
    photometric = fit_articulation(mesh, "lid", evidence, FitConfig(restarts=1, candidates=4, steps=3,
                                                                   kinds=("revolute",)))
    assert photometric.best.axis != a.best.axis
    with pytest.raises(ValueError, match="motion prior"):
        fit_articulation(mesh, "lid", evidence, config)


def test_fit_node_runs_with_sds_guidance():
    from fewstep.nodes.atop.nodes import ATOPFitArticulation

    mesh, evidence, prior = _tiny_case()
    out = ATOPFitArticulation.execute(mesh, evidence, "", "both", 1, 4, 2, 0.05, 0, guidance="sds", sds_weight=0.1,
                                      prior=prior)
    fitted, metrics, images = out.values
    assert metrics["guidance"] == "sds" and metrics["joint_type"] in ("revolute", "prismatic")
    assert fitted.joints[0].child == "lid" and images.shape[-1] == 3
    assert prior.dit.calls > 0


def test_personalise_node_returns_a_prior_for_the_fit():
    from fewstep.nodes.atop.nodes import ATOPPersonaliseMotion

    model = _TinyVideoModel()
    out = ATOPPersonaliseMotion.execute("drawer", "", 1, 1, 2, 2, 2, 1e-3, 0, "", video_model=model)
    prior, metrics = out.values
    assert isinstance(prior, MotionPrior) and prior.caption == "[V] drawer sliding out"
    assert metrics["steps_done"] == 2 and metrics["clips"] == 1 and len(out.ui["loss"]) == 2
