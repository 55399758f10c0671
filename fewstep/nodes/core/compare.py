"""Comparisons as pictures: sample several models (each with its own sampler, schedule and CFG) on the same
prompts and noise, time them, score them, and draw the images as one labelled grid beside a metrics table.

A sweep is a tuple of :class:`Contender`. Its images are ordered contender-major, prompt-minor, so the grid
is contenders down and prompts across; with ``columns="steps × prompts"`` the contenders that share a name
(one model at several step counts) become one row. Metrics are per contender, keyed ``"<row> | <metric>"``
so a METRICS dict stays flat (the editor shows it as a two-column table) and the grid can still put each
row's numbers beside its images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from fewstep.nodes.core.denoiser import Denoiser
    from fewstep.nodes.core.samplers import SamplerSpec

KEY_SEP = " | "
COLUMN_MODES = ("prompts", "steps × prompts")
TIME_KEY = "s/image"
FD_KEY = "FD-EffNet"
ACCURACY_KEY = "attribute acc."
WEIGHTS_KEY = "weights MB"
READ_KEY = "probe reads prompt"
BACKGROUND = (30, 30, 34)
TEXT = (235, 235, 235)
DIM_TEXT = (170, 170, 178)


@dataclass(frozen=True, eq=False)
class Contender:
    """One row of a sweep: a MODEL sampled with its SAMPLER on its SIGMAS at a CFG scale (1 = no CFG)."""

    name: str
    model: Denoiser
    sampler: SamplerSpec
    sigmas: torch.Tensor
    cfg: float = 1.0
    metrics: dict[str, Any] = field(default_factory=dict)   # shown in this row's table (e.g. a quantizer's)

    @property
    def steps(self) -> int:
        return max(len(self.sigmas) - 1, 0)

    @property
    def label(self) -> str:
        return f"{self.name} · {steps_text(self.steps)}"


def steps_text(steps: int) -> str:
    return f"{steps} step" if steps == 1 else f"{steps} steps"


def contenders(name: str, models: Sequence[Denoiser], samplers: Sequence[SamplerSpec],
               sigmas: Sequence[torch.Tensor], cfg: float,
               metrics: Sequence[dict[str, Any]] = ()) -> list[Contender]:
    """One contender per item of the longest list, shorter lists repeating their last item (the executor's
    list rule), so a scheduler fanned out over step counts gives one contender per step count."""
    if not name.strip() or KEY_SEP in name:
        raise ValueError(f"contender name {name!r} must be non-empty and must not contain {KEY_SEP!r}")
    n = max(len(models), len(samplers), len(sigmas), len(metrics))
    pick = lambda items, i: items[min(i, len(items) - 1)] if items else {}  # noqa: E731
    return [Contender(name.strip(), pick(models, i), pick(samplers, i), pick(sigmas, i), float(cfg),
                      dict(pick(metrics, i))) for i in range(n)]


# ------------------------------------------------------------------------------------------ layout


@dataclass(frozen=True)
class Layout:
    """Row and column labels of a sweep's grid (images contender-major, prompt-minor)."""

    rows: list[str]
    columns: list[str]


def layout(sweep: Sequence[Contender], prompts: Sequence[str], columns: str) -> Layout:
    """Rows = contenders ("prompts"), or contender names with step counts across ("steps × prompts")."""
    if columns not in COLUMN_MODES:
        raise ValueError(f"columns must be one of {COLUMN_MODES}, got {columns!r}")
    labels = [c.label for c in sweep]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two contenders share the label {_first_duplicate(labels)!r}: give them different names")
    prompt_labels = list(prompts) if len(prompts) > 1 else []
    if columns == "prompts":
        return Layout(labels, prompt_labels or [prompts[0]])
    names = list(dict.fromkeys(c.name for c in sweep))
    steps = {n: [c.steps for c in sweep if c.name == n] for n in names}
    if any(s != steps[names[0]] for s in steps.values()):
        raise ValueError(f"columns 'steps × prompts' needs every model at the same step counts, got {steps}; "
                         "use columns 'prompts'")
    if [c.name for c in sweep] != [n for n in names for _ in steps[n]]:
        raise ValueError("columns 'steps × prompts': chain each model's step counts together")
    cols = [steps_text(s) + (f" · {p}" if prompt_labels else "") for s in steps[names[0]] for p in prompts]
    return Layout(names, cols)


def _first_duplicate(items: Sequence[str]) -> str:
    seen: set[str] = set()
    return next(i for i in items if i in seen or seen.add(i))  # type: ignore[func-returns-value]


def metric_key(row: str, metric: str) -> str:
    return f"{row}{KEY_SEP}{metric}"


def metric_table(metrics: dict[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], Any]]:
    """(row labels, metric names, {(row, metric): value}) of the ``"<row> | <metric>"`` keys, in order."""
    rows: dict[str, None] = {}
    names: dict[str, None] = {}
    cells: dict[tuple[str, str], Any] = {}
    for key, value in metrics.items():
        if KEY_SEP not in key:
            continue
        row, name = key.rsplit(KEY_SEP, 1)
        rows[row], names[name] = None, None
        cells[(row, name)] = value
    return list(rows), list(names), cells


# ------------------------------------------------------------------------------------------ sampling


def batch_conditioning(clip: Any, prompts: Sequence[str]) -> list[list[Any]]:
    """CONDITIONING with one row per prompt: ``[[states [P, T, D], {"pooled_output": [P, D']}]]``."""
    encoded = [clip.encode(p)[0] for p in prompts]
    shapes = {tuple(states.shape[1:]) for states, _ in encoded}
    if len(shapes) != 1:
        raise ValueError(f"the prompts encode to different token shapes {sorted(shapes)}; cannot batch them")
    extra: dict[str, Any] = {}
    pooled = [e.get("pooled_output") for _, e in encoded]
    if all(p is not None for p in pooled):
        extra["pooled_output"] = torch.cat(pooled)
    return [[torch.cat([states for states, _ in encoded]), extra]]


def repeat_latent(latent: dict[str, Any], n: int) -> dict[str, Any]:
    """The LATENT with ``n`` items: a batch of 1 is repeated, a batch of ``n`` kept, anything else refused."""
    samples = latent["samples"]
    if samples.shape[0] == n:
        return {"samples": samples}
    if samples.shape[0] != 1:
        raise ValueError(f"the latent has a batch of {samples.shape[0]}; give 1 or one per prompt ({n})")
    return {"samples": samples.expand(n, *samples.shape[1:]).clone()}


def sample_contender(contender: Contender, positive: list[list[Any]], negative: list[list[Any]] | None,
                     latent: dict[str, Any], seed: int) -> tuple[torch.Tensor, float]:
    """(LATENT samples [P, C, h, w], seconds of sampling). CFG with the negative prompt when cfg != 1."""
    from fewstep.nodes.core.sampling import GuiderSpec, RandomNoiseSpec, run

    guider = GuiderSpec(contender.model, positive, negative if contender.cfg != 1.0 else None, contender.cfg)
    start = time.perf_counter()
    out, _ = run(guider, contender.sampler, contender.sigmas, latent, RandomNoiseSpec(seed))
    return out["samples"], time.perf_counter() - start


def run_sweep(sweep: Sequence[Contender], clip: Any, vae: Any, prompts: Sequence[str], negative_prompt: str,
              latent: dict[str, Any], seed: int, progress: Any = None) -> tuple[torch.Tensor, list[float]]:
    """Every contender on every prompt with the same noise: (IMAGE [N·P, H, W, 3], seconds per image each)."""
    positive = batch_conditioning(clip, prompts)
    negative = batch_conditioning(clip, [negative_prompt] * len(prompts))
    latent = repeat_latent(latent, len(prompts))
    images, seconds = [], []
    for i, contender in enumerate(sweep):
        samples, spent = sample_contender(contender, positive, negative, latent, seed)
        images.append(vae.decode(samples).float().cpu())
        seconds.append(spent / len(prompts))
        if progress is not None:
            progress(i + 1, len(sweep))
    return torch.cat(images), seconds


# ------------------------------------------------------------------------------------------ metrics


def parsed_scenes(prompts: Sequence[str]) -> list[Any] | None:
    """The procedural scenes the prompts describe, or None when any prompt is outside the grammar."""
    from fewstep.nodes.zoo import data

    scenes = [data.parse_caption(p) for p in prompts]
    return None if any(s is None for s in scenes) else scenes


def probe_reads(images: torch.Tensor, scenes: Sequence[Any], probe: Any = None) -> list[bool]:
    """Per image: does the zoo's attribute probe read the scene exactly (object count and every object's
    colour and shape, slot by slot in reading order)?"""
    from fewstep.nodes.zoo.builtin import compare_scenes, load_probe

    probe = probe or load_probe()
    hits = [compare_scenes(p, s) for p, s in zip(probe.predict(images), scenes, strict=True)]
    return [h["count"] == 1 and h["colour"] == h["shape"] == h["objects"] for h in hits]


def weight_megabytes(model: Any) -> float | None:
    """MB (10^6 bytes) of the MODEL network's parameters and buffers as held in memory (a quantized layer's
    integer codes and scales are buffers), or None when the network is not a torch module."""
    net = getattr(model, "model_fn", None)
    net = getattr(net, "unet", net)
    if not isinstance(net, torch.nn.Module):
        return None
    tensors = [*net.parameters(), *(b for b in net.buffers() if b is not None)]
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def sweep_metrics(sweep: Sequence[Contender], images: torch.Tensor, seconds: Sequence[float],
                  prompts: Sequence[str], fd_reference: int) -> dict[str, float | int | str]:
    """Per contender: seconds per image; weight memory; FD-EffNet against ``fd_reference`` procedural renders
    (0 = skip); attribute accuracy and the fraction of images whose scene the probe reads exactly (prompts of
    the built-in scene grammar only); then the contender's own metrics."""
    rows = [c.label for c in sweep]
    from fewstep.nodes.core.metrics import effnet_features, frechet_distance_few, reference_images
    from fewstep.nodes.zoo.effnet import load_efficientnet_lite0

    per_row = images.reshape(len(rows), len(prompts), *images.shape[1:])
    scenes = parsed_scenes(prompts)
    effnet = load_efficientnet_lite0() if fd_reference >= 2 and len(prompts) >= 2 else None
    reference = effnet_features(reference_images(fd_reference, seed=0)[0], effnet) if effnet else None
    probe = _probe() if scenes is not None else None
    out: dict[str, float | int | str] = {"images per row": len(prompts)}
    for contender, row, batch, spent in zip(sweep, rows, per_row, seconds, strict=True):
        out[metric_key(row, TIME_KEY)] = round(spent, 4)
        megabytes = weight_megabytes(contender.model)
        if megabytes is not None:
            out[metric_key(row, WEIGHTS_KEY)] = round(megabytes, 3)
        if reference is not None:
            out[metric_key(row, FD_KEY)] = round(frechet_distance_few(effnet_features(batch, effnet), reference), 2)
        if probe is not None:
            out[metric_key(row, ACCURACY_KEY)] = round(probe.evaluate(batch, scenes)["attribute_accuracy"], 3)
            out[metric_key(row, READ_KEY)] = round(float(np.mean(probe_reads(batch, scenes, probe))), 3)
        out.update({metric_key(row, name): value for name, value in contender.metrics.items()})
    return out


def _probe() -> Any:
    from fewstep.nodes.zoo.builtin import load_probe

    return load_probe()


def regroup_metrics(metrics: dict[str, Any], sweep: Sequence[Contender], grid: Layout) -> dict[str, Any]:
    """Metrics keyed by contender label, re-keyed by grid row when a row holds several contenders
    (``"MLCM | s/image · 4 steps"``), so every key's row part names a row of the grid."""
    if grid.rows == [c.label for c in sweep]:
        return metrics
    by_label = {c.label: c for c in sweep}
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        row, _, name = key.rpartition(KEY_SEP)
        contender = by_label.get(row)
        out[metric_key(contender.name, f"{name} · {steps_text(contender.steps)}") if contender else key] = value
    return out


# ------------------------------------------------------------------------------------------ drawing


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` px (its bundled FreeType font; the bitmap font without FreeType)."""
    return ImageFont.load_default(size=size)


def wrap(text: str, face: Any, width: int) -> list[str]:
    """Greedy word wrap to ``width`` px; a word wider than that is broken between characters."""
    lines: list[str] = []
    for paragraph in str(text).splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}".strip()
            if face.getlength(trial) <= width:
                line = trial
                continue
            if line:
                lines.append(line)
            line = ""
            for char in word:                      # "weight_bytes_quant" in a 84 px column
                if line and face.getlength(line + char) > width:
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line)
    return lines


def format_value(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


@dataclass(frozen=True)
class GridStyle:
    """Sizes in pixels. At the defaults a 64 px image is drawn at 128 px and labels are 13 px high."""

    tile: int = 128
    gap: int = 4
    pad: int = 8
    font_px: int = 13
    label_width: int = 150
    value_width: int = 84


def _to_pil(image: torch.Tensor, tile: int) -> Image.Image:
    array = np.clip(255.0 * image.detach().float().cpu().numpy(), 0, 255).astype(np.uint8)
    pil = Image.fromarray(array, "RGB")
    # integer upscales stay crisp (nearest); other sizes are resampled smoothly
    if pil.width == pil.height and tile % pil.width == 0:
        return pil.resize((tile, tile), Image.Resampling.NEAREST)
    return pil.resize((tile, tile), Image.Resampling.BICUBIC)


def draw_grid(images: torch.Tensor, rows: Sequence[str], columns: Sequence[str],
              table: tuple[list[str], dict[tuple[str, str], Any]] | None = None,
              style: GridStyle = GridStyle()) -> torch.Tensor:
    """One IMAGE [1, H, W, 3]: ``images`` [R·C, h, w, 3] row-major under column labels, row labels on the
    left and, when ``table`` = (metric names, {(row, metric): value}) is given, each row's values on the right.

    The number of columns is ``len(columns)``; a missing image at the end of the last row stays blank."""
    n_cols = len(columns)
    if n_cols == 0 or not rows:
        raise ValueError("ImageGrid needs at least one row label and one column label")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"ImageGrid: images must be IMAGE [B, H, W, 3], got {tuple(images.shape)}")
    if images.shape[0] > len(rows) * n_cols:
        raise ValueError(f"{images.shape[0]} images do not fit {len(rows)} rows × {n_cols} columns: "
                         "give one label per row and per column")
    face = font(style.font_px)
    names = table[0] if table else []
    col_lines = [wrap(c, face, style.tile) for c in columns]
    col_lines += [wrap(n.replace("_", " "), face, style.value_width) for n in names]   # snake_case keys wrap
    line_h = style.font_px + 3
    head = style.pad + line_h * max(len(lines) for lines in col_lines) + style.gap
    left = style.pad + style.label_width + style.gap
    width = left + n_cols * (style.tile + style.gap) + len(names) * (style.value_width + style.gap) + style.pad
    height = head + len(rows) * (style.tile + style.gap) + style.pad
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x_of = [left + i * (style.tile + style.gap) for i in range(n_cols)]
    x_of += [x_of[-1] + style.tile + style.gap + i * (style.value_width + style.gap) for i in range(len(names))]
    for x, lines in zip(x_of, col_lines, strict=True):
        _text_block(draw, (x, head - style.gap - line_h * len(lines)), lines, face, line_h, DIM_TEXT)
    for r, row in enumerate(rows):
        y = head + r * (style.tile + style.gap)
        lines = wrap(row, face, style.label_width)
        _text_block(draw, (style.pad, y + (style.tile - line_h * len(lines)) // 2), lines, face, line_h, TEXT)
        for c in range(n_cols):
            if r * n_cols + c < images.shape[0]:
                canvas.paste(_to_pil(images[r * n_cols + c], style.tile), (x_of[c], y))
        for x, name in zip(x_of[n_cols:], names, strict=True):
            value = table[1].get((row, name)) if table else None
            text = "-" if value is None else format_value(value)   # (Pillow's default font has no en dash)
            draw.text((x, y + (style.tile - line_h) // 2), text, font=face, fill=TEXT)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]


def _text_block(draw: ImageDraw.ImageDraw, origin: tuple[int, int], lines: Sequence[str], face: Any,
                line_h: int, fill: tuple[int, int, int]) -> None:
    x, y = origin
    for i, line in enumerate(lines):
        draw.text((x, y + i * line_h), line, font=face, fill=fill)


def grid_shape(n_images: int, rows: Sequence[str], columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Labels completed for ``n_images``: empty column labels get numbered ("1", "2", ...) from the row
    count, and empty row labels from the column count."""
    if rows and columns:
        return list(rows), list(columns)
    if columns:
        return [str(i + 1) for i in range(math.ceil(n_images / len(columns)))], list(columns)
    if rows:
        return list(rows), [str(i + 1) for i in range(math.ceil(n_images / len(rows)))]
    return ["1"], [str(i + 1) for i in range(n_images)]
