"""ATOP stage C: fit a part's joint — type, axis, origin, per-frame values and so the range — to motion
evidence by differentiable rendering (photometric + mask losses), from random initialisation.

Parameters ψ of one hypothesis (one joint type), for T evidence frames:

    axis     a = â / |â|                         (unit vector through an unconstrained â ∈ R³)
    origin   o = c + e ⊙ tanh(ô)                  (revolute only; within the object's box grown 1.5×: c its
                                                   centre, e its half extent times 1.5)
    values   θ_t = s · v̂_t,  t = 0 … T−1          (radians for revolute, length for prismatic; s = 1 rad or the
                                                   object's diagonal / 2)

The moving part's rest vertices x move to x' = R(a, θ_t)(x − o) + o (revolute, Rodrigues) or x' = x + θ_t a
(prismatic); the static body stays. Each (view, frame) is rendered with the soft rasteriser and compared with
the evidence:

    L(ψ) = mean_{v,t,p} [ λ_m (A_ψ(p) − M(p))² + λ_c ‖I_ψ(p) − I(p)‖² / 3 ].

Guidance (``FitConfig.guidance``): ``photometric`` is L alone; ``sds`` replaces it by score distillation from a
personalised video model (:mod:`fewstep.nodes.atop.motion`): each view's rendered clip x(ψ) is encoded to the
model's latent z(ψ), and ψ gets  E_{σ,ε}[ w(σ) (ε̂ − ε) ∂z/∂ψ ]  with ε̂ = x_σ + (1 − σ) v̂ from the model's
velocity v̂ at x_σ = (1 − σ) z + σ ε (w = 1, σ ~ U(0.2, 0.8)); only the evidence's cameras are used then: the
random joints are screened, and the joint type chosen, by the render's denoising error at fixed draws, and there
is no value sweep. ``both`` adds λ_sds × the SDS surrogate to L (screening, sweep and type choice by L).

Optimisation is coarse to fine (small images with wide soft edges first, then sharper and larger), runs
``restarts`` random initialisations in one batch, keeps the best by final loss, and does this for both joint
types; the type with the lower final loss wins. The static body's fragments are rendered once per stage and
combined with the moving part's each step (exact: :func:`combine_fragments`).

The fit reads only the rest geometry of the parts and which part moves; the joint stored in the input mesh
(if any) is never used (only :func:`joint_errors` reads it, to score the result).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from fewstep.nodes.atop.evidence import MotionEvidence
from fewstep.nodes.atop.motion import MotionPrior
from fewstep.nodes.atop.objects import merge
from fewstep.nodes.core.mesh import ArticulatedMesh, Joint, Mesh
from fewstep.nodes.core.render.camera import Cameras
from fewstep.nodes.core.render.raster import (
    Fragments,
    SoftRasterSettings,
    combine_fragments,
    lambert_shade,
    rasterize,
    resolve,
)

KINDS = ("revolute", "prismatic")
GUIDANCE = ("photometric", "sds", "both")


@dataclass(frozen=True)
class FitStage:
    """One coarse-to-fine stage: image side (clipped to the evidence's), soft-edge σ (px²), depth softness γ and
    its share of the steps. σ stays small at every size: soft edges blur each face's silhouette and leave seams
    of A ≈ 0.75 along shared edges, which biased the coarse fit (σ = 1 px² at 24 px: the true lid joint scored
    worse than a wrong one); coarse-to-fine comes from the image size instead."""

    size: int
    sigma: float
    gamma: float
    share: float


DEFAULT_STAGES = (FitStage(24, 0.5, 1e-3, 0.4), FitStage(32, 0.25, 3e-4, 0.3), FitStage(48, 0.1, 1e-4, 0.3))


@dataclass(frozen=True)
class FitConfig:
    """Args: restarts (random initialisations per joint type, run as one batch), screened from ``candidates``
    random joints (0 = no screening); ``sweep``: grid size of the per-frame value search after the first
    stage (0 = none); steps per joint type; Adam
    learning rate (cosine-decayed to 10%); loss weights of the mask and colour terms; seed of the
    initialisations; joint types to try; coarse-to-fine stages; guidance (``photometric``, ``sds``, ``both``;
    module docstring) and the weight of the SDS term under ``both``."""

    restarts: int = 4
    candidates: int = 128
    sweep: int = 48
    steps: int = 150
    lr: float = 0.05
    mask_weight: float = 1.0
    color_weight: float = 1.0
    seed: int = 0
    kinds: tuple[str, ...] = KINDS
    stages: tuple[FitStage, ...] = DEFAULT_STAGES
    guidance: str = "photometric"
    sds_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.restarts < 1 or self.steps < 1 or self.lr <= 0:
            raise ValueError(f"articulation fit needs restarts >= 1, steps >= 1 and lr > 0, got {self}")
        if not self.kinds or any(k not in KINDS for k in self.kinds):
            raise ValueError(f"joint kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        if not self.stages:
            raise ValueError("articulation fit needs at least one stage")
        if self.guidance not in GUIDANCE:
            raise ValueError(f"guidance must be one of {GUIDANCE}, got {self.guidance!r}")


@dataclass(frozen=True)
class JointFit:
    """One fitted hypothesis: kind, unit axis, origin (a point on the axis; for prismatic the part's centre),
    per-frame values θ_t (canonical sign: the motion goes mostly positive), final loss."""

    kind: str
    axis: tuple[float, float, float]
    origin: tuple[float, float, float]
    values: tuple[float, ...]
    loss: float

    @property
    def limits(self) -> tuple[float, float]:
        return min(self.values), max(self.values)


@dataclass(frozen=True)
class FitResult:
    """The chosen fit, every joint type's best fit, and the mean loss per step of each type's run."""

    best: JointFit
    by_kind: dict[str, JointFit]
    history: dict[str, list[float]] = field(default_factory=dict)


def rodrigues(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """R = I + sin θ K + (1 − cos θ) K² for unit axes [..., 3] and angles [...] → [..., 3, 3]."""
    zero = torch.zeros_like(axis[..., 0])
    kx, ky, kz = axis.unbind(-1)
    k = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], dim=-1).reshape(*axis.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    return eye + s * k + (1 - c) * (k @ k)


def move_part(vertices: torch.Tensor, kind: str, axis: torch.Tensor, origin: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Rest vertices [Vp, 3] moved for R hypotheses × T frames: axis, origin [R, 3], values [R, T] → [R, T, Vp, 3]."""
    if kind == "prismatic":
        return vertices + values[..., None, None] * axis[:, None, None, :]
    rotation = rodrigues(axis[:, None, :].expand(-1, values.shape[1], -1), values)        # [R, T, 3, 3]
    rel = vertices - origin[:, None, None, :]                                              # [R, 1, Vp, 3]
    return torch.einsum("rtij,rtvj->rtvi", rotation, rel.expand(-1, values.shape[1], -1, -1)) + origin[:, None, None, :]


@dataclass(frozen=True, eq=False)
class _Scene:
    """The static body, the moving part and the object's box, as tensors."""

    body: Mesh
    part: Mesh
    centre: torch.Tensor
    half_extent: torch.Tensor
    size: float


def _scene(mesh: ArticulatedMesh, part: str) -> _Scene:
    if part not in mesh.parts:
        raise ValueError(f"part {part!r} is not in the mesh (parts: {sorted(mesh.parts)})")
    if len(mesh.parts) < 2:
        raise ValueError("articulation fit needs a mesh of at least two parts (a body and the moving part)")
    others = [m for name, m in mesh.parts.items() if name != part]
    body = merge(others) if all(m.vertex_colors is not None for m in others) else others[0]
    verts = torch.cat([m.vertices for m in mesh.parts.values()])
    lo, hi = verts.min(0).values, verts.max(0).values
    return _Scene(body, mesh.parts[part], (lo + hi) / 2, (hi - lo) / 2, float((hi - lo).norm()))


def _stage_views(evidence: MotionEvidence, size: int) -> tuple[Cameras, torch.Tensor, torch.Tensor]:
    """Evidence cameras, clips [V, T, s, s, 3] and masks [V, T, s, s] at side ``size`` (area-averaged)."""
    cams = evidence.cameras
    scale = size / cams.width
    cameras = Cameras(cams.rotation, cams.eye, cams.focal * scale, size, size)
    v, t, h, w, _ = evidence.frames.shape
    frames = evidence.frames.reshape(v * t, h, w, 3).permute(0, 3, 1, 2)
    masks = evidence.masks.reshape(v * t, 1, h, w)
    frames = F.interpolate(frames, size=(size, size), mode="area").permute(0, 2, 3, 1).reshape(v, t, size, size, 3)
    masks = F.interpolate(masks, size=(size, size), mode="area").reshape(v, t, size, size)
    return cameras, frames, masks


def _select(fragments: Fragments, index: torch.Tensor) -> Fragments:
    return Fragments(fragments.log_transmittance[index], fragments.log_norm[index], fragments.weight[index],
                     fragments.color[index], fragments.depth[index])


@dataclass
class _Hypotheses:
    """R hypotheses of one joint type as raw, unconstrained parameters (module docstring)."""

    kind: str
    axis_raw: torch.Tensor      # [R, 3]
    origin_raw: torch.Tensor    # [R, 3]
    value_raw: torch.Tensor     # [R, T]
    value_scale: float

    def parameters(self) -> list[torch.Tensor]:
        return [self.axis_raw, self.origin_raw, self.value_raw] if self.kind == "revolute" else [self.axis_raw, self.value_raw]

    def decode(self, scene: _Scene) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        axis = self.axis_raw / self.axis_raw.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        origin = scene.centre + 1.5 * scene.half_extent * torch.tanh(self.origin_raw)
        return axis, origin, self.value_scale * self.value_raw


def _initial(kind: str, restarts: int, frames: int, scene: _Scene, gen: torch.Generator) -> _Hypotheses:
    """Random axes (uniform on the sphere), origins (uniform in the box), and a random monotone start of the
    values (θ = 0 would give the axis no gradient: a zero rotation is the same about every axis)."""
    axis = torch.randn(restarts, 3, generator=gen, dtype=torch.float32)
    origin = torch.atanh((torch.rand(restarts, 3, generator=gen, dtype=torch.float32) * 2 - 1) / 1.5)
    ramp = torch.linspace(0.0, 1.0, frames, dtype=torch.float32)
    magnitude = 0.2 + 0.3 * torch.rand(restarts, 1, generator=gen, dtype=torch.float32)
    scale = 1.0 if kind == "revolute" else scene.size / 2
    return _Hypotheses(kind, axis.requires_grad_(True), origin.requires_grad_(True),
                       (magnitude * ramp).requires_grad_(True), scale)


class _Renderer:
    """Renders H hypotheses × V views × P poses at one stage, the body's fragments cached per view."""

    def __init__(self, scene: _Scene, evidence: MotionEvidence, stage: FitStage, hypotheses: int, poses: int) -> None:
        self.scene, self.poses = scene, poses
        self.cameras, self.frames, self.masks = _stage_views(evidence, stage.size)
        self.settings = SoftRasterSettings(sigma=stage.sigma, gamma=stage.gamma, cull_backfaces=True)
        self.views, self.background = evidence.views, evidence.background
        body = scene.body
        with torch.no_grad():
            body_frags = rasterize(body.vertices, body.faces, self.cameras, self.settings, body.vertex_colors,
                                   lambert_shade(body.vertices, body.faces))
        # image order (h, v, p): the view of image i is (i // P) % V
        view_of = (torch.arange(hypotheses * self.views * poses) // poses) % self.views
        self.body = _select(body_frags, view_of)
        self.all_cameras = self.cameras.select(view_of)

    def render(self, moved: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB [H, V, P, s, s, 3] and silhouettes [H, V, P, s, s] for part vertices [H, P, Vp, 3]."""
        h, p = moved.shape[:2]
        per_image = moved[:, None].expand(h, self.views, p, *moved.shape[2:]).reshape(-1, *moved.shape[2:])
        part = self.scene.part
        frags = rasterize(per_image, part.faces, self.all_cameras, self.settings, part.vertex_colors,
                          lambert_shade(per_image, part.faces))
        image = resolve(combine_fragments(self.body, frags), self.all_cameras, self.settings, self.background)
        s = self.cameras.width
        return image.rgb.reshape(h, self.views, p, s, s, 3), image.alpha.reshape(h, self.views, p, s, s)

    def loss(self, moved: torch.Tensor, config: FitConfig) -> torch.Tensor:
        """Per-hypothesis loss [H] when pose t is compared with evidence frame t (module docstring)."""
        rgb, alpha = self.render(moved)
        mask_term = (alpha - self.masks).pow(2).mean(dim=(1, 2, 3, 4))
        color_term = (rgb - self.frames).pow(2).mean(dim=(1, 2, 3, 4, 5))
        return config.mask_weight * mask_term + config.color_weight * color_term

    def sds_loss(self, moved: torch.Tensor, prior: MotionPrior, gen: torch.Generator) -> torch.Tensor:
        """Per-hypothesis SDS surrogate [H] (each view's clip scored by the video prior, views averaged)."""
        rgb, _ = self.render(moved)
        h = rgb.shape[0]
        surrogate, _ = prior.sds_surrogate(rgb.reshape(h * self.views, *rgb.shape[2:]), gen)
        return surrogate.reshape(h, self.views).mean(1)

    @torch.no_grad()
    def prior_score(self, moved: torch.Tensor, prior: MotionPrior, chunk: int = 16) -> torch.Tensor:
        """Per-hypothesis denoising error [H] of the renders under the prior at fixed draws (views averaged)."""
        out = []
        for start in range(0, moved.shape[0], chunk):
            rgb, _ = self.render_subset(moved[start:start + chunk])
            h = rgb.shape[0]
            out.append(prior.denoising_score(rgb.reshape(h * self.views, *rgb.shape[2:])).reshape(h, self.views).mean(1))
        return torch.cat(out)

    def render_subset(self, moved: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`render` for fewer hypotheses than the renderer was built for (a leading slice of its images)."""
        h, p = moved.shape[:2]
        n = h * self.views * p
        per_image = moved[:, None].expand(h, self.views, p, *moved.shape[2:]).reshape(-1, *moved.shape[2:])
        part = self.scene.part
        cams = self.all_cameras.select(torch.arange(n))
        frags = rasterize(per_image, part.faces, cams, self.settings, part.vertex_colors,
                          lambert_shade(per_image, part.faces))
        image = resolve(combine_fragments(_select(self.body, torch.arange(n)), frags), cams, self.settings,
                        self.background)
        s = self.cameras.width
        return image.rgb.reshape(h, self.views, p, s, s, 3), image.alpha.reshape(h, self.views, p, s, s)

    def pose_frame_loss(self, moved: torch.Tensor, config: FitConfig) -> torch.Tensor:
        """Loss [H, P, T] of every pose against every evidence frame (for the value sweep)."""
        rgb, alpha = self.render(moved)
        mask_term = (alpha[:, :, :, None] - self.masks[None, :, None]).pow(2).mean(dim=(1, 4, 5))
        color_term = (rgb[:, :, :, None] - self.frames[None, :, None]).pow(2).mean(dim=(1, 4, 5, 6))
        return config.mask_weight * mask_term + config.color_weight * color_term


def _screen(kind: str, scene: _Scene, evidence: MotionEvidence, config: FitConfig, gen: torch.Generator,
            prior: MotionPrior | None = None) -> _Hypotheses:
    """Random restarts, screened: draw ``candidates`` random joints (uniform axis, origin uniform in the grown
    box, values a ramp from 0 to a random end), score them at the first stage without gradients, keep the best
    ``restarts`` as the starting points of the optimisation."""
    count = max(config.candidates, config.restarts)
    pool = _initial(kind, count, evidence.steps, scene, gen)
    end = (torch.rand(count, 1, generator=gen) * 1.6 + 0.2) if kind == "revolute" else (torch.rand(count, 1, generator=gen) * 0.9 + 0.1)
    pool.value_raw = (end * torch.linspace(0.0, 1.0, evidence.steps)).requires_grad_(True)
    if count == config.restarts:
        return pool
    renderer = _Renderer(scene, evidence, config.stages[0], count, evidence.steps)
    with torch.no_grad():
        axis, origin, values = pool.decode(scene)
        moved = move_part(scene.part.vertices, kind, axis, origin, values)
        scores = renderer.prior_score(moved, prior) if config.guidance == "sds" else renderer.loss(moved, config)
        order = scores.argsort()
    keep = _diverse(axis, order, config.restarts)
    return _Hypotheses(kind, pool.axis_raw.detach()[keep].requires_grad_(True),
                       pool.origin_raw.detach()[keep].requires_grad_(True),
                       pool.value_raw.detach()[keep].requires_grad_(True), pool.value_scale)


def _diverse(axis: torch.Tensor, order: torch.Tensor, count: int, min_degrees: float = 25.0) -> torch.Tensor:
    """The first ``count`` of ``order`` whose axis lines are at least ``min_degrees`` apart (greedy; filled up
    from the rest if too few are): the best screened candidates often share one basin, and restarts in one
    basin waste the batch (a door settled on a 130° wrong axis with its 2 restarts 6° apart)."""
    chosen: list[int] = []
    limit = math.cos(math.radians(min_degrees))
    for index in order.tolist():
        if all(abs(float(axis[index] @ axis[j])) < limit for j in chosen):
            chosen.append(index)
        if len(chosen) == count:
            break
    chosen += [i for i in order.tolist() if i not in chosen][:count - len(chosen)]
    return torch.tensor(chosen)


def _sweep_values(hyp: _Hypotheses, scene: _Scene, evidence: MotionEvidence, stage: FitStage, config: FitConfig) -> None:
    """Per-frame values re-chosen by a grid search with axis and origin held (a frame's value can sit in a local
    minimum on its own — e.g. a lid tilted into the box — that no gradient leaves). Grid: ``sweep`` values over
    [−π, π] (revolute) or [−1, 1] · object diagonal (prismatic)."""
    grid = torch.linspace(-1.0, 1.0, config.sweep) * (math.pi if hyp.kind == "revolute" else scene.size)
    renderer = _Renderer(scene, evidence, stage, hyp.axis_raw.shape[0], config.sweep)
    with torch.no_grad():
        axis, origin, _ = hyp.decode(scene)
        values = grid[None].expand(axis.shape[0], -1)
        table = renderer.pose_frame_loss(move_part(scene.part.vertices, hyp.kind, axis, origin, values), config)
        hyp.value_raw.data.copy_(grid[table.argmin(dim=1)] / hyp.value_scale)                      # [H, T]


def _objective(renderer: _Renderer, moved: torch.Tensor, config: FitConfig, prior: MotionPrior | None,
               gen: torch.Generator) -> torch.Tensor:
    """Per-hypothesis loss [H] to minimise under ``config.guidance`` (module docstring)."""
    if config.guidance == "photometric":
        return renderer.loss(moved, config)
    assert prior is not None
    sds = renderer.sds_loss(moved, prior, gen)
    if config.guidance == "sds":
        return sds
    return renderer.loss(moved, config) + config.sds_weight * sds


def _run_kind(kind: str, scene: _Scene, evidence: MotionEvidence, config: FitConfig, gen: torch.Generator,
              progress: Callable[[int, int, float], None] | None,
              prior: MotionPrior | None = None) -> tuple[JointFit, list[float]]:
    """Optimise R screened hypotheses of one joint type through the stages; the best by final loss, canonicalised."""
    hyp = _screen(kind, scene, evidence, config, gen, prior)
    optimizer = torch.optim.Adam(hyp.parameters(), lr=config.lr)
    history: list[float] = []
    total_share = sum(s.share for s in config.stages)
    done = 0
    for index, stage in enumerate(config.stages):
        if index == 1 and config.sweep and config.guidance != "sds":
            _sweep_values(hyp, scene, evidence, config.stages[0], config)
            optimizer = torch.optim.Adam(hyp.parameters(), lr=config.lr)      # fresh moments after the jump
        renderer = _Renderer(scene, evidence, stage, config.restarts, evidence.steps)
        last = index == len(config.stages) - 1
        steps = config.steps - done if last else max(1, round(config.steps * stage.share / total_share))
        for _ in range(steps):
            for group in optimizer.param_groups:   # cosine decay to 10 % over the whole run
                group["lr"] = config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * done / config.steps)))
            axis, origin, values = hyp.decode(scene)
            losses = _objective(renderer, move_part(scene.part.vertices, kind, axis, origin, values), config, prior, gen)
            optimizer.zero_grad()
            losses.sum().backward()
            optimizer.step()
            history.append(float(losses.detach().mean()))
            done += 1
            if progress is not None:
                progress(done, config.steps, history[-1])
    with torch.no_grad():
        axis, origin, values = hyp.decode(scene)
        moved = move_part(scene.part.vertices, kind, axis, origin, values)
        final = renderer.prior_score(moved, prior) if config.guidance == "sds" else renderer.loss(moved, config)
    best = int(final.argmin())
    return _canonical(kind, axis[best], origin[best], values[best], float(final[best]), scene), history


def _canonical(kind: str, axis: torch.Tensor, origin: torch.Tensor, values: torch.Tensor, loss: float,
               scene: _Scene) -> JointFit:
    """Sign so the motion is mostly positive ((a, θ) and (−a, −θ) are the same motion); origin = the point of the
    axis line nearest the moving part's centre (revolute), the part's centre (prismatic)."""
    if float(values.mean()) < 0:
        axis, values = -axis, -values
    centre = scene.part.vertices.mean(0)
    if kind == "revolute":
        origin = origin + ((centre - origin) @ axis) * axis
    else:
        origin = centre
    return JointFit(kind, tuple(float(x) for x in axis), tuple(float(x) for x in origin),  # type: ignore[arg-type]
                    tuple(float(x) for x in values), loss)


def fit_articulation(mesh: ArticulatedMesh, part: str, evidence: MotionEvidence, config: FitConfig = FitConfig(),
                     progress: Callable[[str, int, int, float], None] | None = None,
                     prior: MotionPrior | None = None) -> FitResult:
    """Fit the joint of ``part`` to the evidence for each joint type; the lower final loss wins.

    Args:
        mesh: the object at rest (parts in one frame); only geometry and colours are read.
        part: the moving part's name (the rest is the static body).
        evidence: clips from known cameras (:func:`fewstep.nodes.atop.evidence.render_evidence`).
        progress: called as (kind, step, steps, mean loss) after every optimisation step.
        prior: the personalised video model (:func:`fewstep.nodes.atop.motion.personalise`); needed when
            ``config.guidance`` is ``sds`` or ``both``. Under ``sds`` the evidence's clips are never read (only
            its cameras), and ``JointFit.loss`` is the render's denoising error under the prior.
    """
    if config.guidance != "photometric" and prior is None:
        raise ValueError(f"guidance {config.guidance!r} needs a motion prior (ATOP Personalise Motion)")
    scene = _scene(mesh, part)
    if evidence.cameras.width != evidence.cameras.height:
        raise ValueError(f"the fit needs square evidence images, got {evidence.cameras.width} x {evidence.cameras.height}")
    side = evidence.cameras.width    # stages larger than the evidence run at its size
    config = replace(config, stages=tuple(replace(s, size=min(s.size, side)) for s in config.stages))
    gen = torch.Generator().manual_seed(config.seed)
    fits, history = {}, {}
    for kind in config.kinds:
        report = None if progress is None else (lambda step, total, loss, k=kind: progress(k, step, total, loss))
        fits[kind], history[kind] = _run_kind(kind, scene, evidence, config, gen, report, prior)
    best = min(fits.values(), key=lambda fit: fit.loss)
    return FitResult(best, fits, history)


def fitted_mesh(mesh: ArticulatedMesh, part: str, fit: JointFit) -> ArticulatedMesh:
    """The input parts with the fitted joint (body → part) in place of any joint they had."""
    parent = next(name for name in mesh.parts if name != part)
    lo, hi = fit.limits
    joint = Joint(f"{part}_joint", fit.kind, fit.axis, fit.origin, (lo, hi), parent, part)  # type: ignore[arg-type]
    return ArticulatedMesh(dict(mesh.parts), (joint,))


def joint_errors(truth: Joint, fit: JointFit, object_size: float) -> dict[str, float | str | bool]:
    """Scores against a known joint: type correct; axis angle (degrees, directed, and of the line: sign-free);
    origin error = distance from the true origin to the fitted axis line / object diagonal (revolute only);
    range error = |fitted upper − true upper| (degrees or length / object diagonal)."""
    a_true = torch.tensor(truth.axis, dtype=torch.float64)
    a_fit = torch.tensor(fit.axis, dtype=torch.float64)
    cos = float((a_true @ a_fit).clamp(-1, 1))
    out: dict[str, float | str | bool] = {
        "kind_true": truth.kind, "kind_fit": fit.kind, "kind_correct": truth.kind == fit.kind,
        "axis_error_deg": math.degrees(math.acos(cos)), "axis_line_error_deg": math.degrees(math.acos(abs(cos))),
    }
    upper_error = abs(fit.limits[1] - truth.limits[1])
    if truth.kind == "revolute" and fit.kind == "revolute":
        rel = torch.tensor(truth.origin, dtype=torch.float64) - torch.tensor(fit.origin, dtype=torch.float64)
        out["origin_error"] = float((rel - (rel @ a_fit) * a_fit).norm()) / object_size
        out["range_error_deg"] = math.degrees(upper_error)
    elif truth.kind == fit.kind:
        out["range_error"] = upper_error / object_size
    return out
