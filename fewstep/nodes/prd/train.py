"""Progressive Rendering Distillation (PRD): the training loop of TriplaneTurbo (methods.md §11, code
``multiprompt_dual_renderer_multistep_generator.py:training_step``), at demo scale.

One iteration, for a batch of captions:

    latent ← pure noise
    for i, t in enumerate(prd_timesteps(K)):                  # K = 4: [999, 749, 499, 249]
        noisy = √ᾱ_t latent + √(1−ᾱ_t) ε'                     # fresh ε'; i = 0: noise of noise ≈ noise
        x̂0 = generator(noisy, t, text);  triplane = head(x̂0)
        render V views (azimuths 90° apart from a random start, elevation U[0, 30]°) with the volume renderer
        L_i = ASD(renders | text, cameras) from the multi-view teacher
        backward(L_i / K);   latent ← x̂0.detach()               # no gradient across steps
    optimizer step

The shared trainer loop (``nodes.core.train.loop.fit``) owns the optimizer step, clipping, checkpoints,
resume and progress; :func:`prd_iteration` runs the K backward passes of steps 1..K−1 itself and hands
the last step's loss back (plus the earlier ones' values, detached, so the reported loss is the sum).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fewstep.nodes.core.render.camera import orbit_cameras
from fewstep.nodes.core.render.volume import VolSDFDensity, VolumeSettings, render_field
from fewstep.nodes.core.train.loop import Checkpointer, FitSpec, TrainState, fit, trainable_parameters
from fewstep.nodes.prd.asd import ASDLoss, t_min_at
from fewstep.nodes.prd.generator import GeneratorConfig, TriplaneGenerator, prd_timesteps
from fewstep.nodes.zoo.multiview.data import BACKGROUND, ViewSpec, camera_features
from fewstep.nodes.zoo.multiview.models import Teacher

TEACHER_SIZE = ViewSpec().size   # the teacher's image side


@dataclass(frozen=True)
class PRDConfig:
    """Args:
        k: PRD steps (1, 2 or 4 in the paper's ablation).
        steps / batch / lr / seed: iterations, captions per iteration, Adam lr, run seed.
        views: renders per object and step; render_size: their side in pixels, resized (bilinear) to the
            teacher's side when they differ (TriplaneTurbo renders a downsampled global view likewise).
        samples / beta: stratified samples per ray and VolSDF β of the training renders.
        cfg / t_min_start / t_min_end / max_step: ASD guidance scale and timestep range (ramped).
        lora / rank: PETA kind ("plane-specific" or "shared") and LoRA rank.
        sparsity: weight of the opacity sum per render (TriplaneTurbo's sparsity regulariser): without it the
            teacher's pull on the fixed background grew objects until they filled the cube.
    """

    k: int = 4
    steps: int = 200
    batch: int = 2
    lr: float = 3e-3
    seed: int = 0
    views: int = 4
    render_size: int = 16
    samples: int = 32
    beta: float = 0.02
    cfg: float = 3.0
    t_min_start: float = 0.5
    t_min_end: float = 0.02
    max_step: float = 0.98
    lora: str = "plane-specific"
    rank: int = 8
    sparsity: float = 0.0
    max_offset: float = 0.3

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(lora=self.lora, rank=self.rank, max_offset=self.max_offset)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


def training_views(objects: int, views: int, rng: torch.Generator, max_elevation: float = 30.0) -> torch.Tensor:
    """(azimuth, elevation) [objects · views, 2] in degrees: per object a random start azimuth and views
    spread 360 / views apart (MVDream's orthogonal views for 4), one random elevation in [0, max]."""
    start = torch.rand(objects, 1, generator=rng, device=rng.device) * 360.0
    az = (start + torch.arange(views, device=rng.device) * (360.0 / views)) % 360.0   # [objects, views]
    el = (torch.rand(objects, 1, generator=rng, device=rng.device) * max_elevation).expand(objects, views)
    return torch.stack([az, el], dim=-1).reshape(-1, 2)


def render_triplane_views(triplane, views: torch.Tensor, size: int, samples: int, beta: float,
                          rng: torch.Generator | None, spec: ViewSpec | None = None,
                          opacity: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Renders [B·V, 3, S, S] in −1..1 of a triplane batch from views [B·V, 2] (object b sees rows b·V ...);
    the opacity [B·V, S, S] is appended to ``opacity`` when given."""
    spec = spec or ViewSpec()
    cams = orbit_cameras(views[:, 0].tolist(), views[:, 1].tolist(), spec.distance, spec.fov, size,
                         device=views.device)
    settings = VolumeSettings(samples=samples, bound=triplane.bound, density=VolSDFDensity(beta))
    image = render_field(triplane.field, cams, settings, background=BACKGROUND, generator=rng)
    if opacity is not None:
        opacity.append(image.opacity)
    return image.rgb.permute(0, 3, 1, 2) * 2 - 1


def prd_iteration(gen: TriplaneGenerator, teacher: Teacher, asd: ASDLoss, text: torch.Tensor, cfg: PRDConfig,
                  progress: float, rng: torch.Generator, on_step: Callable[[int, torch.Tensor], None] | None = None
                  ) -> torch.Tensor:
    """One PRD iteration for captions ``text`` [B, D] (module docstring). Steps 1..K−1 are backpropagated
    here; returns step K's loss (graph kept) plus the earlier losses' values (no graph). ``on_step(i, x̂0)``
    sees each step's x̂0 (tests)."""
    b, ts = text.shape[0], prd_timesteps(cfg.k)
    latent = torch.randn((b, *gen.latent_shape), generator=rng, device=text.device)
    done = torch.zeros((), device=text.device)
    for i, t in enumerate(ts):
        a = gen.alphas[t]
        noisy = a.sqrt() * latent + (1 - a).sqrt() * torch.randn(latent.shape, generator=rng, device=text.device)
        _, x0 = gen.denoise(noisy, torch.full((b,), t, device=text.device), text)
        if on_step is not None:
            on_step(i, x0)
        views = training_views(b, cfg.views, rng)
        alpha: list[torch.Tensor] = []
        z = render_triplane_views(gen.triplane(x0), views, cfg.render_size, cfg.samples, cfg.beta, rng, opacity=alpha)
        if z.shape[-1] != TEACHER_SIZE:
            z = F.interpolate(z, size=(TEACHER_SIZE, TEACHER_SIZE), mode="bilinear", align_corners=False)
        grad = asd.gradient(teacher, z.detach(), text.repeat_interleave(cfg.views, dim=0), camera_features(views),
                            t_min_at(progress, cfg.t_min_start, cfg.t_min_end), rng)
        loss = (asd(z, grad, b, cfg.views) + cfg.sparsity * alpha[0].sum() / (b * cfg.views)) / len(ts)
        if i + 1 < len(ts):
            loss.backward()                                  # per-step backward: this step's graph is freed
            done = done + loss.detach()
        latent = x0.detach()                                 # no gradient flows into the next step
    return loss + done


def build_generator(teacher: Teacher, cfg: PRDConfig) -> TriplaneGenerator:
    torch.manual_seed(cfg.seed)
    return TriplaneGenerator(teacher.unet, cfg.generator_config())


def train_prd(gen: TriplaneGenerator, teacher: Teacher, captions: list[str], embed: Callable[[list[str]], torch.Tensor],
              cfg: PRDConfig, *, checkpointer: Checkpointer | None = None, max_seconds: float | None = None,
              preview_fn: Callable[[int], object] | None = None, preview_every: int = 0) -> TrainState:
    """PRD-train ``gen`` (its trainable parameters) with the shared resumable loop; step n draws its
    captions and every random number from the loop's generator (seed, n), so a resumed run replays."""
    device = str(next(gen.parameters()).device)
    text_table = embed(list(dict.fromkeys(captions))).to(device)
    index = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    asd = ASDLoss(cfg=cfg.cfg, max_step=cfg.max_step)
    params = list(trainable_parameters(gen).values())
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99))

    def step_fn(step: int, rng: torch.Generator) -> torch.Tensor:
        pick = torch.randint(0, len(captions), (cfg.batch,), generator=rng, device=rng.device).tolist()
        text = text_table[[index[captions[j]] for j in pick]]
        return prd_iteration(gen, teacher, asd, text, cfg, step / max(cfg.steps, 1), rng)

    spec = FitSpec(total_steps=cfg.steps, seed=cfg.seed, lr_at=lambda step: cfg.lr, grad_clip=1.0,
                   device=device, checkpointer=checkpointer, meta={"prd": asdict(cfg)}, max_seconds=max_seconds,
                   preview_every=preview_every)
    gen.train()
    return fit(gen, optimizer, step_fn, spec, preview_fn=preview_fn)


def generator_state(gen: TriplaneGenerator) -> dict[str, torch.Tensor]:
    """The generator's own weights (adapters, head, decoder): the teacher's frozen UNet is not repeated."""
    return {k: v.detach().cpu().clone() for k, v in trainable_parameters(gen).items()}


def load_generator_state(gen: TriplaneGenerator, state: dict[str, torch.Tensor]) -> TriplaneGenerator:
    params = trainable_parameters(gen)
    missing = sorted(set(params) - set(state))
    if missing:
        raise ValueError(f"generator weights lack {missing[:3]} (trained with another configuration?)")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)
    return gen.eval()


def stage_generator(out: Path, seconds: float, steps: int, cfg: PRDConfig | None = None,
                    teacher_root: Path | None = None, device: str = "cpu") -> dict:
    """Train the shipped generator (K = 4, plane-specific LoRA) within ``seconds`` and write it to ``out``.
    ``teacher_root``: folder of the multi-view teacher and its caption probe (default: the zoo's weights)."""
    from fewstep.nodes.prd.bundle import GENERATOR_FILE
    from fewstep.nodes.prd.evaluate import evaluate_generator
    from fewstep.nodes.zoo.multiview.builtin import (
        TEACHER_FILE,
        CaptionEmbedder,
        load_probe,
        load_teacher,
        save_weights,
    )
    from fewstep.nodes.zoo.multiview.data import all_primitives

    cfg = cfg or PRDConfig(steps=steps)
    teacher, embed = load_teacher(teacher_root), CaptionEmbedder()
    teacher.unet.to(device)
    gen = build_generator(teacher, cfg).to(device)
    captions = [p.caption() for p in all_primitives()]
    start = time.monotonic()
    state = train_prd(gen, teacher, captions, embed, cfg, max_seconds=seconds)
    train_s = time.monotonic() - start
    metrics = evaluate_generator(gen.eval(), load_probe(teacher_root), embed, cfg.k, seed=123)
    save_weights(_StateModule(generator_state(gen)), out / GENERATOR_FILE,
                 {"generator": cfg.generator_config().to_dict(), "prd": asdict(cfg), "k": cfg.k,
                  "teacher": TEACHER_FILE})
    report = {"prd": asdict(cfg), "iterations": state.step, "train_seconds": round(train_s, 1),
              "final_loss": round(sum(state.losses[-20:]) / max(1, len(state.losses[-20:])), 4), "eval": metrics,
              "date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads()}
    (out / "prd-generator-report.json").write_text(json.dumps(report, indent=1))
    return report


class _StateModule(torch.nn.Module):
    """A state dict as a module (what ``save_weights`` takes)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._state = state

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:   # noqa: ARG002 (nn.Module's signature)
        return dict(self._state)



