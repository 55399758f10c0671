"""Line plots drawn with Pillow (no matplotlib at run time): the accumulation curve, score per trial per
generation, as an image for the editor (IMAGE) and the benchmark."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Series:
    """One line: x and y values, an RGB colour, a legend label; ``dashed`` for baselines."""

    x: list[float]
    y: list[float]
    colour: tuple[int, int, int]
    label: str = ""
    dashed: bool = False


def viridis(t: float) -> tuple[int, int, int]:
    """A 5-stop approximation of matplotlib's viridis (the paper's generation colours), t in [0, 1]."""
    stops = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    t = min(max(t, 0.0), 1.0) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    return tuple(round(a + (b - a) * f) for a, b in zip(stops[i], stops[i + 1], strict=True))  # type: ignore[return-value]


def _bounds(series: list[Series], hlines: list[tuple[float, str]]) -> tuple[float, float, float, float]:
    xs = [v for s in series for v in s.x]
    ys = [v for s in series for v in s.y if math.isfinite(v)] + [v for v, _ in hlines]
    if not xs or not ys:
        raise ValueError("nothing to plot: every series is empty")
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or 1.0
    return min(xs), max(max(xs), min(xs) + 1), y0 - pad, y1 + pad


def _dash(draw: ImageDraw.ImageDraw, p: tuple[float, float], q: tuple[float, float], colour: tuple[int, int, int],
          dashed: bool) -> None:
    if not dashed:
        draw.line([p, q], fill=colour, width=2)
        return
    n = max(int(math.dist(p, q) / 6), 1)
    for i in range(0, n, 2):
        a, b = i / n, min(i + 1, n) / n
        draw.line([(p[0] + (q[0] - p[0]) * a, p[1] + (q[1] - p[1]) * a),
                   (p[0] + (q[0] - p[0]) * b, p[1] + (q[1] - p[1]) * b)], fill=colour, width=2)


def line_plot(series: list[Series], *, title: str, xlabel: str, ylabel: str,
              hlines: list[tuple[float, str]] | None = None, size: tuple[int, int] = (640, 400)) -> Image.Image:
    """A white-background line chart with axes, ticks, legend and optional dashed horizontal references."""
    hlines = hlines or []
    w, h = size
    left, right, top, bottom = 52, 150, 30, 40
    x0, x1, y0, y1 = _bounds(series, hlines)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (w - left - right), top + (y1 - y) / (y1 - y0) * (h - top - bottom))

    draw.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        draw.text((4, px(x0, yv)[1] - 6), f"{yv:.1f}", fill=(0, 0, 0))
        xv = x0 + (x1 - x0) * i / 4
        draw.text((px(xv, y0)[0] - 8, h - bottom + 4), f"{xv:.1f}" if x1 - x0 < 8 else f"{xv:.0f}", fill=(0, 0, 0))
    draw.text((left, 8), title, fill=(0, 0, 0))
    draw.text(((w - right) // 2, h - 16), xlabel, fill=(0, 0, 0))
    draw.text((4, top - 16), ylabel, fill=(0, 0, 0))
    for value, label in hlines:
        _dash(draw, px(x0, value), px(x1, value), (0, 0, 0), True)
        draw.text((left + 4, px(x0, value)[1] - 12), label[:40], fill=(0, 0, 0))     # inside, clear of the legend
    legend_y = top
    for s in series:
        pts = [px(a, b) for a, b in zip(s.x, s.y, strict=True) if math.isfinite(b)]
        for p, q in zip(pts, pts[1:], strict=False):
            _dash(draw, p, q, s.colour, s.dashed)
        if s.label:
            draw.line([(w - right + 6, legend_y + 6), (w - right + 24, legend_y + 6)], fill=s.colour, width=3)
            draw.text((w - right + 28, legend_y), s.label[:18], fill=(0, 0, 0))
            legend_y += 14
    return img


def generations_plot(trial_means: list[list[float]], *, title: str, baselines: dict[str, list[float]] | None = None,
                     hlines: list[tuple[float, str]] | None = None, ylabel: str = "score") -> Image.Image:
    """Score per trial per generation laid end to end (generation g covers trials g·K … g·K + K − 1), as in the
    paper's Fig. 3; baselines (one value per trial over all G·K trials) dashed."""
    k = len(trial_means[0]) if trial_means else 1
    n = len(trial_means)
    series = [Series([float(g * k + i) for i in range(len(m))], m, viridis(g / max(n - 1, 1)),
                     f"gen {g}" if g in (0, n - 1) or n <= 6 else "") for g, m in enumerate(trial_means)]
    palette = [(230, 120, 20), (200, 30, 30), (120, 120, 120)]
    for j, (name, ys) in enumerate((baselines or {}).items()):
        series.append(Series([float(i) for i in range(len(ys))], ys, palette[j % 3], name, dashed=True))
    return line_plot(series, title=title, xlabel="trial", ylabel=ylabel, hlines=hlines)
