"""CONDITIONING with more than one plain entry: areas, masks, strengths, timestep ranges, ControlNets,
and the guiders that evaluate it (ComfyUI's ``calc_cond_batch`` semantics, our own code).

A CONDITIONING is a list of ``[states [1, T, D], extra]``. The ``extra`` keys read here (ComfyUI's):
- ``area``: ``(h, w, y, x)`` in latent cells (pixels // 8) or ``("percentage", h, w, y, x)`` in 0..1;
  ``strength`` multiplies that entry's weight (ConditioningSetArea*);
- ``mask`` [B, H, W] with ``mask_strength`` and ``set_area_to_bounds`` (ConditioningSetMask);
- ``start_percent`` / ``end_percent``: the entry takes part only while the sampling progress (0 = first,
  highest sigma; 1 = last) lies in that range (ConditioningSetTimestepRange);
- ``control``: a :class:`ControlSpec` chain (ControlNet* nodes), ``control_apply_to_uncond``.

Evaluation at one ``(x, sigma)``: every active entry predicts x0 on its area; predictions are averaged
with per-pixel weights ``w = strength * mask`` (areas not touching the latent's border fade in over 8
latent cells, as ComfyUI does so that area seams do not show):

    D(x, sigma) = sum_e w_e D_e(x_area_e, sigma) / sum_e w_e.

Pixels that no entry covers get 0 (ComfyUI's 1e-37 denominator). A single plain entry takes the
existing fast route (``sampling.model_cond`` + ``guidance.CFGGuider``); only richer conditioning comes here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from fewstep.nodes.core.apg import APGState

FEATHER = 8          # latent cells over which an inner area edge fades in (ComfyUI's rr = 8)
# a black image (pixels 0) in SD's scaled 4-channel latent space: ComfyUI's blank masked image for inpainting
# UNets run without a mask
BLACK_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)
RICH_KEYS = ("area", "mask", "start_percent", "end_percent", "control")


def is_rich(conditioning: list[list[Any]] | None) -> bool:
    """True when the conditioning needs this module (more than one entry, or area/mask/range/control)."""
    if not conditioning:
        return False
    if len(conditioning) > 1:
        return True
    extra = conditioning[0][1]
    return any(extra.get(k) is not None for k in RICH_KEYS) or float(extra.get("strength", 1.0)) != 1.0


def percent_to_sigma(schedule: Any, percent: float) -> float:
    """The sigma reached after ``percent`` of the model's timesteps, counted from the top (ComfyUI's
    ``percent_to_sigma``): 0 -> +inf (always active), 1 -> 0, else sigma at timestep (1 - p) t_max; for the
    continuous EDM schedules log-linear from sigma_max to sigma_min (ComfyUI's ModelSamplingContinuousEDM)."""
    from fewstep.nodes.core.denoiser import EDMSchedule

    if percent <= 0.0:
        return float("inf")
    if percent >= 1.0:
        return 0.0
    if isinstance(schedule, EDMSchedule):
        lo, hi = math.log(schedule.sigma_min), math.log(schedule.sigma_max)
        return math.exp((hi - lo) * (1.0 - percent) + lo)
    t_max = float(schedule.timestep(torch.tensor(float(schedule.sigma_max))))
    return float(schedule.sigma_at(torch.tensor((1.0 - percent) * t_max)))


@dataclass(frozen=True, eq=False)
class ControlSpec:
    """One applied ControlNet (the ``control`` value of a conditioning entry), chained to the previous one.

    Args:
        net: a ``nodes.core.controlnet.ControlNet`` (residuals for the UNet's skip connections).
        hint: the control image [B, H, W, 3] in 0..1.
        strength: multiplies the residuals.
        start_percent / end_percent: active part of the sampling (0 = first step).
        previous: the ControlNet applied before this one (their residuals add up).
    """

    net: Any
    hint: torch.Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: ControlSpec | None = None

    def chain(self) -> list[ControlSpec]:
        specs, spec = [], self
        while spec is not None:
            specs.append(spec)
            spec = spec.previous
        return specs

    def active(self, schedule: Any, sigma: float) -> list[ControlSpec]:
        """The ControlNets of the chain whose percent range contains sigma."""
        return [s for s in self.chain() if percent_to_sigma(schedule, s.end_percent) <= sigma
                <= percent_to_sigma(schedule, s.start_percent)]


@dataclass
class Entry:
    """One conditioning entry prepared for a latent of size (h, w)."""

    states: torch.Tensor
    extra: dict[str, Any]
    box: tuple[int, int, int, int]                 # y0, y1, x0, x1 in latent cells
    weight: torch.Tensor                           # [B or 1, 1, y1 - y0, x1 - x0]
    sigma_range: tuple[float, float] = (0.0, float("inf"))
    control: ControlSpec | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def _area_box(area: Any, h: int, w: int) -> tuple[int, int, int, int]:
    if area is None:
        return 0, h, 0, w
    if area[0] == "percentage":
        ah, aw, ay, ax = (round(float(v) * n) for v, n in zip(area[1:], (h, w, h, w), strict=True))
    else:
        ah, aw, ay, ax = (int(v) for v in area)
    y0, x0 = min(ay, h - 1), min(ax, w - 1)
    return y0, min(h, y0 + max(1, ah)), x0, min(w, x0 + max(1, aw))


def _feather(weight: torch.Tensor, box: tuple[int, int, int, int], h: int, w: int) -> torch.Tensor:
    """Linear ramps 1/8, 2/8 ... 1 along every area edge that is not on the latent's border."""
    y0, y1, x0, x1 = box
    weight = weight.clone()
    for t in range(min(FEATHER, weight.shape[-2])):
        ramp = (t + 1) / FEATHER
        if y0 != 0:
            weight[..., t, :] *= ramp
        if y1 < h:
            weight[..., -1 - t, :] *= ramp
    for t in range(min(FEATHER, weight.shape[-1])):
        ramp = (t + 1) / FEATHER
        if x0 != 0:
            weight[..., :, t] *= ramp
        if x1 < w:
            weight[..., :, -1 - t] *= ramp
    return weight


def _mask_bounds(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    rows, cols = (mask > 0.5).any(0).any(1).nonzero(), (mask > 0.5).any(0).any(0).nonzero()
    if rows.numel() == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def prepare(conditioning: list[list[Any]], h: int, w: int, schedule: Any) -> list[Entry]:
    """Areas, weights and sigma ranges of every entry for a latent of h x w cells."""
    entries = []
    for states, extra in conditioning:
        box = _area_box(extra.get("area"), h, w)
        weight = torch.full((1, 1, box[1] - box[0], box[3] - box[2]), float(extra.get("strength", 1.0)))
        if extra.get("mask") is not None:
            mask = extra["mask"].float()
            mask = mask.reshape(-1, 1, *mask.shape[-2:])                      # [B, 1, H, W]
            mask = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)
            if extra.get("set_area_to_bounds") and (bounds := _mask_bounds(mask[:, 0])) is not None:
                box = bounds
            weight = mask[:, :, box[0]:box[1], box[2]:box[3]] * float(extra.get("mask_strength", 1.0))
        else:
            weight = _feather(weight, box, h, w)
        lo = percent_to_sigma(schedule, float(extra.get("end_percent", 1.0)))
        hi = percent_to_sigma(schedule, float(extra.get("start_percent", 0.0)))
        entries.append(Entry(states, extra, box, weight, (lo, hi), extra.get("control")))
    return entries


def _entry_cond(entry: Entry, x: torch.Tensor, crop: torch.Tensor, sigma: float, arch: str,
                schedule: Any) -> dict[str, Any]:
    from fewstep.nodes.core.sampling import model_cond

    cond = crop_concat(model_cond([[entry.states, entry.extra]], crop, arch), entry.box, *x.shape[-2:])
    if entry.control is not None:
        active = entry.control.active(schedule, sigma)
        if active:
            cond["control"] = active
    return cond


def evaluate(denoiser: Any, entries: list[Entry], x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """sum_e w_e D_e / sum_e w_e over the entries active at sigma (see the module docstring)."""
    s = float(torch.as_tensor(sigma).reshape(-1)[0])
    arch = denoiser.extras.get("arch", "sd1")
    out = torch.zeros_like(x)
    total = torch.full_like(x[:, :1], 1e-37)
    for entry in entries:
        lo, hi = entry.sigma_range
        if not lo <= s <= hi:
            continue
        y0, y1, x0, x1 = entry.box
        crop = x[:, :, y0:y1, x0:x1]
        weight = entry.weight.to(x.device, x.dtype)
        x0_pred = denoiser(crop, sigma, _entry_cond(entry, x, crop, s, arch, denoiser.schedule))
        out[:, :, y0:y1, x0:x1] += x0_pred * weight
        total[:, :, y0:y1, x0:x1] += weight
    return out / total


def _share_control(positive: list[Entry], negative: list[Entry]) -> None:
    """ControlNetApply (the old node) marks its control ``control_apply_to_uncond``: the negative
    entries without a control of their own then use the positive's (ComfyUI batches them together)."""
    shared = next((e.control for e in positive if e.control is not None and e.extra.get("control_apply_to_uncond")),
                  None)
    if shared is None:
        return
    for entry in negative:
        if entry.control is None:
            entry.control = shared


def rescale_cfg(x: torch.Tensor, sigma: torch.Tensor | float, x0_c: torch.Tensor, x0_u: torch.Tensor,
                scale: float, multiplier: float) -> torch.Tensor:
    """CFG with the rescale of Lin et al. 2024 ("Common diffusion noise schedules and sample steps are
    flawed", Sec. 3.4, eq. 15-16), computed on v-predictions as ComfyUI's RescaleCFG does:
    v = (x / (1 + s^2) - x0) sqrt(1 + s^2) / s; v_cfg = v_u + scale (v_c - v_u);
    v_rescaled = v_cfg std(v_c) / std(v_cfg); v_final = m v_rescaled + (1 - m) v_cfg;
    x0 = x / (1 + s^2) - v_final s / sqrt(1 + s^2)."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
    k = (s**2 + 1).sqrt()
    x_vp = x / (s**2 + 1)
    v_c, v_u = (x_vp - x0_c) * k / s, (x_vp - x0_u) * k / s
    v_cfg = v_u + scale * (v_c - v_u)
    dims = tuple(range(1, x.ndim))
    rescaled = v_cfg * (v_c.std(dim=dims, keepdim=True) / v_cfg.std(dim=dims, keepdim=True))
    v_final = multiplier * rescaled + (1 - multiplier) * v_cfg
    return x_vp - v_final * s / k


def cfg_combine(model: Any, x: torch.Tensor, sigma: torch.Tensor | float, x0_c: torch.Tensor,
                x0_u: torch.Tensor, scale: float) -> torch.Tensor:
    """``D_u + scale (D_c - D_u)``, or RescaleCFG's version when the model carries ``extras["rescale_cfg"]``
    (ComfyUI's ``cfg_function``)."""
    multiplier = model.extras.get("rescale_cfg")
    if multiplier is not None:
        return rescale_cfg(x, sigma, x0_c, x0_u, scale, float(multiplier))
    return x0_u + scale * (x0_c - x0_u)


class ComposedGuider:
    """CFG over rich conditioning: ``D = D_u + scale (D_c - D_u)`` with D_c, D_u from :func:`evaluate`;
    RescaleCFG when the model carries ``extras["rescale_cfg"]``, APG (``nodes.core.apg``) when it carries
    ``extras["apg"]``. ``scale == 1`` skips the negative.

    It exposes ``model`` (not ``denoiser``), so the CUDA fast path leaves it eager."""

    def __init__(self, model: Any, positive: list[list[Any]], negative: list[list[Any]] | None, scale: float,
                 latent: torch.Tensor) -> None:
        h, w = latent.shape[-2:]
        self.model = model
        self.scale = float(scale)
        self.positive = prepare(positive, h, w, model.schedule)
        # entries of the negative prompt say so (the SDXL refiner conditions on it: aesthetic score 2.5)
        negative = None if negative is None else [[c, {"prompt_type": "negative", **e}] for c, e in negative]
        self.negative = prepare(negative, h, w, model.schedule) if negative is not None else None
        if self.negative is not None:
            _share_control(self.positive, self.negative)
        settings = model.extras.get("apg")
        self.apg = None if settings is None else APGState(settings)     # per run: APG's momentum state

    @property
    def schedule(self) -> Any:
        return self.model.schedule

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Any = None) -> torch.Tensor:
        if self.negative is None or self.scale == 1.0:
            x0_c = evaluate(self.model, self.positive, x, sigma)
            if self.apg is None:
                return x0_c
            # ComfyUI's cfg-1 shortcut hands APG a zero unconditional prediction (see nodes.core.apg)
            return self._combine(x, sigma, x0_c, torch.zeros_like(x0_c))
        return self.predict_with_uncond(x, sigma, cond)[0]

    def predict_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor | float,
                            cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(guided x0, unconditional x0) for the CFG++ samplers (``nodes.core.sampler_math``); the negative
        pass runs even at scale 1; without a negative prompt both are the positive prediction."""
        x0_c = evaluate(self.model, self.positive, x, sigma)
        if self.negative is None:
            if self.apg is None:
                return x0_c, x0_c
            zeros = torch.zeros_like(x0_c)
            return self._combine(x, sigma, x0_c, zeros), zeros
        x0_u = evaluate(self.model, self.negative, x, sigma)
        return self._combine(x, sigma, x0_c, x0_u), x0_u

    def _combine(self, x: torch.Tensor, sigma: torch.Tensor | float, x0_c: torch.Tensor,
                 x0_u: torch.Tensor) -> torch.Tensor:
        """ComfyUI's order: the pre-CFG step (APG rewrites D_c), then CFG or RescaleCFG."""
        if self.apg is not None:
            x0_c = self.apg.modified_cond(x0_c, x0_u, sigma, self.scale)
        return cfg_combine(self.model, x, sigma, x0_c, x0_u, self.scale)


class InpaintGuider:
    """A guider restricted to a noise mask (ComfyUI's ``KSamplerX0Inpaint``): outside the mask the latent
    is held at the original image noised to the current sigma, and the x0 prediction there is the image:
        x_in = m x + (1 - m) q(latent, sigma),   D = m D(x_in) + (1 - m) latent.
    m = 1 where the image is regenerated. ``model`` is the inner guider's model (the fast path stays off)."""

    def __init__(self, inner: Any, model: Any, latent: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor) -> None:
        self.inner = inner
        self.model = model
        self.latent = latent
        self.noise = noise
        self.mask = prepare_mask(mask, latent)

    @property
    def schedule(self) -> Any:
        return self.inner.schedule

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: Any = None) -> torch.Tensor:
        m = self.mask.to(x.device, x.dtype)
        latent, noise = self.latent.to(x.device, x.dtype), self.noise.to(x.device, x.dtype)
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        x = x * m + self.model.noise_latent(latent, noise, s) * (1 - m)
        return self.inner(x, sigma, cond) * m + latent * (1 - m)

    def predict_with_uncond(self, x: torch.Tensor, sigma: torch.Tensor | float,
                            cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked guided x0, unconditional x0 at the masked input): ComfyUI's CFG++ hook sees the
        unconditional prediction inside KSamplerX0Inpaint, before the output mask."""
        from fewstep.nodes.core.sampler_math import guided_and_uncond

        m = self.mask.to(x.device, x.dtype)
        latent, noise = self.latent.to(x.device, x.dtype), self.noise.to(x.device, x.dtype)
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        x = x * m + self.model.noise_latent(latent, noise, s) * (1 - m)
        guided, uncond = guided_and_uncond(self.inner, x, sigma, cond)
        return guided * m + latent * (1 - m), uncond


def prepare_mask(mask: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """A [B, 1, H, W] / [B, H, W] / [H, W] mask resized (bilinear) to the latent [B, C, h, w] and repeated
    over its batch (ComfyUI's ``prepare_mask``)."""
    mask = mask.float().reshape(-1, 1, *mask.shape[-2:])
    mask = F.interpolate(mask, size=latent.shape[-2:], mode="bilinear", align_corners=False)
    if mask.shape[0] < latent.shape[0]:
        mask = mask.repeat(-(-latent.shape[0] // mask.shape[0]), 1, 1, 1)[:latent.shape[0]]
    return mask


def inpaint_concat(cond: dict[str, Any], x_in: torch.Tensor, channels: int) -> torch.Tensor:
    """The extra UNet input of inpainting models (SD inpainting, Rombach et al. 2022, Sec. 4.5 / App. E:
    4 latent + 1 mask + 4 masked-image latent channels), in diffusers' and ComfyUI's order [mask, masked
    image latent], resized to x_in [B, C, h, w] and not scaled by c_in. Without InpaintModelConditioning (and
    without a latent noise mask, which ``sampling.with_inpaint_defaults`` passes on) the whole image is "to
    paint": mask 1 and, as in ComfyUI, the latent of a black image (SD's VAE; zeros for other widths)."""
    b, _, h, w = x_in.shape
    if cond.get("concat_mask") is None or cond.get("concat_latent_image") is None:
        blank = torch.zeros(b, channels - 1, h, w)
        if channels - 1 == len(BLACK_LATENT):
            blank += torch.tensor(BLACK_LATENT).reshape(1, -1, 1, 1)
        parts = [torch.ones(b, 1, h, w), blank]
    else:
        mask, image = concat_at_size(cond, h, w)
        parts = [mask[:1].expand(b, -1, -1, -1) if mask.shape[0] != b else mask,
                 image[:1].expand(b, -1, -1, -1) if image.shape[0] != b else image]
    return torch.cat([p.float() for p in parts], dim=1).to(x_in.device, x_in.dtype)


def concat_at_size(cond: dict[str, Any], h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, 1, h, w], masked-image latent [B, C, h, w]) of InpaintModelConditioning resized (bilinear)
    to a latent of h x w cells, the mask rounded to 0 / 1 after resizing (ComfyUI's ``concat_cond``)."""
    mask, image = cond["concat_mask"].float(), cond["concat_latent_image"].float()
    mask = mask.reshape(-1, 1, *mask.shape[-2:])
    if mask.shape[-2:] != (h, w):
        mask = F.interpolate(mask, size=(h, w), mode="bilinear")
    if image.shape[-2:] != (h, w):
        image = F.interpolate(image, size=(h, w), mode="bilinear")
    return mask.round(), image


def crop_concat(cond: dict[str, Any], box: tuple[int, int, int, int], h: int, w: int) -> dict[str, Any]:
    """The model cond of an entry evaluated on the area ``box`` (y0, y1, x0, x1) of an h x w latent: the
    inpainting concat (mask, masked-image latent) is taken at the full latent's size and cut to the area, as
    the latent is (ComfyUI crops every noise-shaped model cond to the area: ``CONDNoiseShape``)."""
    if cond.get("concat_mask") is None or cond.get("concat_latent_image") is None or box == (0, h, 0, w):
        return cond
    y0, y1, x0, x1 = box
    mask, image = concat_at_size(cond, h, w)
    return {**cond, "concat_mask": mask[..., y0:y1, x0:x1], "concat_latent_image": image[..., y0:y1, x0:x1]}
