"""METRICS and plots of accumulation runs (shared by the nodes and ``fewstep bench culture``)."""

from __future__ import annotations

import math

from PIL.Image import Image

from fewstep.nodes.culture.accumulate import Generation
from fewstep.nodes.culture.plot import Series, generations_plot, line_plot, viridis
from fewstep.nodes.culture.runs import InWeightsResult

Metrics = dict[str, float | int | str]


def _r(x: float) -> float:
    return round(float(x), 3) if math.isfinite(x) else float("nan")


def in_context_summary(gens: list[Generation], k: int, oracle: list[float], rl2: list[float] | None,
                       env_name: str) -> tuple[Metrics, Image]:
    """Per generation: final-trial score (and TSP tour length); the best oracle's mean trial score; the RL²
    baseline at the same overall trial ((g+1)·K − 1, equal experience). Plus the paper-style plot."""
    metrics: Metrics = {}
    for g, gen in enumerate(gens):
        metrics[f"gen{g}_final"] = _r(gen.trial_means()[-1])
        if env_name == "tsp":
            metrics[f"gen{g}_tour"] = _r(gen.final_tour())
    oracle_score = sum(oracle) / len(oracle)
    metrics["oracle"] = _r(oracle_score)
    if rl2 is not None:
        for g in range(len(gens)):
            metrics[f"rl2_trial{(g + 1) * k - 1}"] = _r(rl2[(g + 1) * k - 1])
    baselines = {"RL2 (alone)": rl2} if rl2 is not None else {}
    image = generations_plot([g.trial_means() for g in gens], title=f"In-context accumulation: {env_name}",
                             baselines=baselines, hlines=[(oracle_score, "best noisy oracle")])
    return metrics, image


def in_weights_summary(social: InWeightsResult, single: InWeightsResult | None,
                       factor: int) -> tuple[Metrics, Image]:
    """Best final score per generation, the single-lifetime baseline trained ``factor``× one generation's
    steps, and a plot of each generation's training curve (final-trial score per update) laid end to end."""
    metrics: Metrics = {f"gen{g}_best": _r(s) for g, s in enumerate(social.best_scores())}
    series = []
    offset = 0
    n = len(social.curves)
    for g, curve in enumerate(social.curves):
        xs = [float(offset + i) for i in range(len(curve))]
        series.append(Series(xs, curve, viridis(g / max(n - 1, 1)), f"gen {g}"))
        offset += len(curve)
    if single is not None:
        metrics[f"single_{factor}x_best"] = _r(single.best_scores()[0])
        series.append(Series([float(i) for i in range(len(single.curves[0]))], single.curves[0], (200, 30, 30),
                             f"single {factor}x", dashed=True))
    image = line_plot(series, title="In-weights accumulation", xlabel="PPO update", ylabel="training score")
    return metrics, image
