"""Small SVG line/scatter plots (no plotting library on the dev machine); readable in any browser or on GitHub."""

from __future__ import annotations

from html import escape

W, H, PAD = 560, 360, 56
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def svg_plot(series: dict[str, list[tuple[float, float]]], *, title: str, xlabel: str, ylabel: str,
             lines: bool = True, logx: bool = False) -> str:
    """One SVG with a polyline (or markers only) per series of (x, y) points."""
    import math

    pts = [p for s in series.values() for p in s]
    fx = (lambda v: math.log10(v)) if logx else (lambda v: v)
    xs, ys = [fx(p[0]) for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 if max(ys) > 0 else 1.0

    def sx(v: float) -> float:
        return PAD + (fx(v) - x0) / (x1 - x0) * (W - 2 * PAD)

    def sy(v: float) -> float:
        return H - PAD - (v - y0) / (y1 - y0) * (H - 2 * PAD)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>',
           f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>',
           f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
           f'<text x="{W / 2}" y="{H - 14}" text-anchor="middle">{escape(xlabel)}</text>',
           f'<text x="14" y="{H / 2}" text-anchor="middle" transform="rotate(-90 14 {H / 2})">{escape(ylabel)}</text>']
    for t in _ticks(y0, y1):
        out.append(f'<text x="{PAD - 4}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.3g}</text>')
    for t in _ticks(x0, x1):
        label = 10 ** t if logx else t
        out.append(f'<text x="{PAD + (t - x0) / (x1 - x0) * (W - 2 * PAD):.1f}" y="{H - PAD + 14}" '
                   f'text-anchor="middle">{label:.3g}</text>')
    for i, (name, s) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        if lines and len(s) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>' for x, y in s]
        out.append(f'<text x="{W - PAD - 150}" y="{PAD + 14 * i}" fill="{colour}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
