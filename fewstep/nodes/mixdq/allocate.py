"""Bit allocation by integer programming (MixDQ Sec. 4.3) and the QUANT_CONFIG it produces.

For one group of layers with choices ``bits[j]``, binary variables ``c[i, j]`` pick one width per layer:

    minimise   sum_ij c[i,j] * cost[i,j]
    subject to sum_j c[i,j] = 1                                  (one choice per layer)
               sum_ij c[i,j] * bits[j] * w_i <= budget * sum_i w_i  (average bits, w_i = size share)

solved exactly with ``scipy.optimize.milp`` (HiGHS branch and bound). MixDQ maximises the summed raw
metric; we minimise the summed *error*: ``10**(-SQNR/10)`` (the relative noise power, which adds up
across layers to first order) for quality layers and ``1 - SSIM`` for content layers. The two groups
have incomparable metrics (the point of decoupling), so each gets its own budget; the split between them
is scanned (MixDQ: ``k in linspace(0.46, 1.36, 10)``) and, when an ``evaluate`` callback is given, the
candidate whose samples are closest to full precision is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fewstep.nodes.mixdq.layers import FP_BITS
from fewstep.nodes.mixdq.sensitivity import Sensitivity

CONTENT_W_BITS = (2, 4, 8)
QUALITY_W_BITS = (4, 8)
SPLITS = tuple(float(k) for k in np.linspace(0.46, 1.36, 10))


def solve_allocation(cost: np.ndarray, bits: Sequence[int], sizes: Sequence[float], budget: float) -> list[int]:
    """Optimal bits per layer (see the module docstring). cost: [L, J]; returns L widths from ``bits``."""
    from scipy.optimize import Bounds, LinearConstraint, milp  # lazy: ~1.4 s of CPU at pack load otherwise
    cost = np.asarray(cost, dtype=np.float64)
    n_layers, n_choices = cost.shape
    if n_choices != len(bits) or len(sizes) != n_layers:
        raise ValueError(f"solve_allocation: cost {cost.shape} vs {len(bits)} bit choices, {len(sizes)} sizes")
    w = np.asarray(sizes, dtype=np.float64)
    if budget < min(bits) - 1e-9:
        raise ValueError(f"bit budget {budget} is below the smallest choice {min(bits)}")
    one_hot = np.kron(np.eye(n_layers), np.ones(n_choices))                  # [L, L*J]
    spend = (w[:, None] * np.asarray(bits, dtype=np.float64)[None, :]).ravel()   # [L*J]
    constraints = [LinearConstraint(one_hot, 1, 1),
                   LinearConstraint(spend[None, :], -np.inf, budget * w.sum() * (1 + 1e-9))]
    res = milp(cost.ravel(), constraints=constraints, integrality=np.ones(cost.size),
               bounds=Bounds(0, 1))
    if not res.success:
        raise RuntimeError(f"bit allocation failed: {res.message}")
    choice = res.x.reshape(n_layers, n_choices).argmax(axis=1)
    return [int(bits[j]) for j in choice]


def _error(sens: Sensitivity, name: str, bits: int, kind: str, decoupled: bool) -> float:
    sqnr = getattr(sens, f"{kind}_sqnr")[name]
    ssim = getattr(sens, f"{kind}_ssim").get(name)
    if bits not in sqnr or (decoupled and sens.group[name] == "content" and ssim is not None and bits not in ssim):
        what = "weight_probe_bits" if kind == "w" else "act_probe_bits"
        raise ValueError(f"no {'weight' if kind == 'w' else 'activation'} sensitivity at {bits} bits for layer "
                         f"{name}; probe that width first ({what} of MixDQ Calibrate)")
    if decoupled and sens.group[name] == "content" and ssim is not None:
        return 1.0 - ssim[bits]
    return 10.0 ** (-sqnr[bits] / 10.0)


def _sizes(sens: Sensitivity, kind: str) -> dict[str, int]:
    """Budget weights: parameter counts for weights, input elements per sample for activations."""
    return sens.w_size if kind == "w" else {n: max(v, 1) for n, v in sens.a_size.items()}


def _group_alloc(sens: Sensitivity, names: list[str], bits: Sequence[int], budget: float,
                 decoupled: bool, kind: str = "w") -> dict[str, int]:
    """One group's integer program over ``bits`` at an average of ``budget`` (clipped to the choices).

    Weights use the widths probed for every layer of the group; activations must have every width probed
    (an activation choice the user asked for is never dropped silently)."""
    if not names:
        return {}
    if kind == "w":
        bits = [b for b in bits if all(b in sens.w_sqnr[n] for n in names)]   # only the probed widths
        if not bits:
            raise ValueError("no weight width was probed for every layer of a group; probe at least 4 and 8")
    budget = min(max(budget, min(bits)), max(bits))
    if len(bits) == 1:
        return {n: int(bits[0]) for n in names}
    cost = monotone_costs(np.array([[_error(sens, n, b, kind, decoupled) for b in bits] for n in names]), bits)
    sizes = [_sizes(sens, kind)[n] for n in names]
    choice = use_spare_budget(solve_allocation(cost, bits, sizes, budget), cost, bits, sizes, budget)
    return dict(zip(names, choice, strict=True))


def _split_candidates(sens: Sensitivity, names: list[str], budget: float, content_bits: Sequence[int],
                      quality_bits: Sequence[int], decoupled: bool, kind: str,
                      splits: Sequence[float]) -> list[dict[str, int]]:
    """One allocation per budget split ``k``: the content group targets ``k * budget`` (clipped to its
    choices), the quality group gets what keeps the size-weighted mean at ``budget``; infeasible splits
    (quality target below its smallest choice) are skipped."""
    sizes = _sizes(sens, kind)
    content = [n for n in names if sens.group[n] == "content"]
    quality = [n for n in names if sens.group[n] != "content"]
    total = sum(sizes[n] for n in names)
    size_c = sum(sizes[n] for n in content)
    candidates = []
    for k in splits:
        target_c = min(max(k * budget, min(content_bits)), max(content_bits)) if content else 0.0
        rest = total - size_c
        target_q = (budget * total - target_c * size_c) / rest if rest else 0.0
        if quality and target_q < min(quality_bits) - 1e-9:
            continue
        alloc = _group_alloc(sens, content, content_bits, target_c, decoupled, kind)
        alloc.update(_group_alloc(sens, quality, quality_bits, target_q, decoupled, kind))
        if alloc not in candidates:
            candidates.append(alloc)
    return candidates


def monotone_costs(cost: np.ndarray, bits: Sequence[int]) -> np.ndarray:
    """Errors [L, J] made non-increasing in bits: err'(b) = max_{b' >= b} err(b').

    A one-layer probe at b bits can score *better* than at b' > b (measured on this repo's student:
    1 - SSIM at 4 bits below the 8-bit value for a cross-attention layer, both ~1e-4, the difference being
    which pixels the rounding happened to move). Taken as is, the integer program then spends *fewer* bits
    for a lower "error": at a budget of 8 bits MixDQ chose 4-bit layers and fell 10 dB of PSNR to FP below
    the uniform W8A8 (14-layer smoke run). Fewer bits never reduce the true error (the grid is coarser).
    """
    order = np.argsort(np.asarray(bits))[::-1]                             # widest choice first
    out = np.array(cost, dtype=np.float64)
    out[:, order] = np.maximum.accumulate(out[:, order], axis=1)
    return out


def use_spare_budget(choice: list[int], cost: np.ndarray, bits: Sequence[int], sizes: Sequence[float],
                     budget: float) -> list[int]:
    """Widen layers whose wider choice costs no more (ties left by :func:`monotone_costs`; the MILP's
    relative gap of 1e-4 does not see them) while the average stays within ``budget``; small layers first."""
    bits = list(bits)
    w = np.asarray(sizes, dtype=np.float64)
    choice = list(choice)
    spare = budget * w.sum() * (1 + 1e-9) - sum(b * s for b, s in zip(choice, w, strict=True))
    for i in np.argsort(w):
        j = bits.index(choice[i])
        for k in sorted(range(len(bits)), key=lambda k: -bits[k]):
            extra = (bits[k] - bits[j]) * w[i]
            if bits[k] > bits[j] and cost[i, k] <= cost[i, j] and extra <= spare:
                choice[i], spare = bits[k], spare - extra
                break
    return choice


def allocate_weights(sens: Sensitivity, budget: float, *, content_bits: Sequence[int] = CONTENT_W_BITS,
                     quality_bits: Sequence[int] = QUALITY_W_BITS, decoupled: bool = True,
                     splits: Sequence[float] = SPLITS,
                     evaluate: Callable[[dict[str, int]], float] | None = None) -> dict[str, int]:
    """Weight bits per layer at an average of at most ``budget`` bits (weighted by parameter count).

    ``k`` in ``splits`` sets the content group's target to ``k * budget`` (clipped to its choices) and
    gives the rest to the quality group; ``evaluate(weight_bits) -> error`` picks among the candidates
    (without it, the split k = 1 is used). ``decoupled=False`` scores every layer by SQNR (the ablation).
    """
    candidates = _split_candidates(sens, sens.layers(), budget, content_bits, quality_bits, decoupled, "w",
                                   splits if evaluate is not None else (1.0,))
    if not candidates:
        raise ValueError(f"weight budget {budget} is infeasible for the quality layers' choices {quality_bits}")
    if evaluate is None or len(candidates) == 1:
        return candidates[0]
    return min(candidates, key=evaluate)


def keep_fp_layers(sens: Sensitivity, keep_fp_frac: float) -> list[str]:
    """The ``ceil(keep_fp_frac * L)`` layers with the lowest activation SQNR at 8 bits (MixDQ keeps the
    1 % most sensitive activations in FP16, ranked by their A8 probe), most damaged first."""
    names = sens.layers()
    n_keep = int(np.ceil(keep_fp_frac * len(names))) if keep_fp_frac > 0 else 0
    if n_keep and any(8 not in sens.a_sqnr.get(n, {}) for n in names):
        raise ValueError("keeping activations 16-bit ranks layers by their 8-bit activation probe: "
                         "probe 8 bits (act_probe_bits of MixDQ Calibrate) or set keep_fp_percent to 0")
    return sorted(names, key=lambda n: sens.a_sqnr[n][8])[:n_keep]


def allocate_acts(sens: Sensitivity, budget: float = 8.0, *, keep_fp_frac: float = 0.01,
                  bits: Sequence[int] = (8,), decoupled: bool = True, splits: Sequence[float] = SPLITS,
                  evaluate: Callable[[dict[str, int]], float] | None = None) -> tuple[dict[str, int], list[str]]:
    """Activation bits per layer (MixDQ Sec. 4.3 applied to activations).

    The ``keep_fp_frac`` most sensitive layers (:func:`keep_fp_layers`; at least one when the fraction is
    positive) keep 16-bit activations. With one width in ``bits`` every other layer gets it. With several
    (MixDQ: {4, 8}) an integer program per group picks them so that the mean width of the *other* layers,
    weighted by input elements per sample, is at most ``budget`` (MixDQ: 7.7 with 1 % kept FP16). Errors
    are metric-decoupled as for weights: ``1 - SSIM`` of the samples for content layers (when probed),
    ``10**(-SQNR/10)`` for the rest, so the budget split between the groups is scanned over ``splits``;
    ``evaluate(act_bits) -> error`` picks among the candidates (without it, the split k = 1).
    ``decoupled=False`` scores every layer by SQNR in one program (the ablation).
    """
    keep = keep_fp_layers(sens, keep_fp_frac)
    rest = [n for n in sens.layers() if n not in keep]
    bits = sorted({int(b) for b in bits})
    if not bits or any(not 2 <= b <= 8 for b in bits):
        raise ValueError(f"activation widths must be 2..8 bits, got {bits}")
    alloc = {n: FP_BITS for n in keep}
    if not rest:
        return alloc, keep
    if len(bits) == 1 or not decoupled:
        candidates = [_group_alloc(sens, rest, bits, budget, False, "a")]
    else:
        candidates = _split_candidates(sens, rest, budget, bits, bits, True, "a",
                                       splits if evaluate is not None else (1.0,))
        if not candidates:                    # every split starves one group: one joint program instead
            candidates = [_group_alloc(sens, rest, bits, budget, False, "a")]
    best = candidates[0] if evaluate is None or len(candidates) == 1 else min(candidates, key=evaluate)
    alloc.update(best)
    return alloc, keep


def average_bits(bits: dict[str, int], sizes: dict[str, int]) -> float:
    """Size-weighted mean width."""
    total = sum(sizes[n] for n in bits)
    return sum(bits[n] * sizes[n] for n in bits) / total if total else 0.0


def mean_act_bits(act_bits: dict[str, int], sens: Sensitivity, *, include_fp: bool = False) -> float:
    """Mean activation width weighted by input elements per sample: over the quantized layers (MixDQ's
    activation budget), or over every layer with 16-bit ones counted as 16 (``include_fp``)."""
    chosen = {n: b for n, b in act_bits.items() if include_fp or b < FP_BITS}
    return average_bits(chosen, _sizes(sens, "a"))


def make_config(sens: Sensitivity, weight_bits: dict[str, int], act_bits: dict[str, int], *,
                budget: float, act_budget: float, bos_aware: bool, method: str) -> dict:
    """A QUANT_CONFIG dict (JSON-serialisable; see app.types.QUANT_CONFIG)."""
    ranges = {n: (sens.absmax_no_bos.get(n, sens.absmax[n]) if bos_aware else sens.absmax[n])
              for n in weight_bits}
    return {
        "method": method,
        "weight_bits": dict(weight_bits),
        "act_bits": dict(act_bits),
        "keep_fp": sorted(n for n, b in act_bits.items() if b >= FP_BITS),
        "budget": float(budget),
        "act_budget": float(act_budget),
        "mean_weight_bits": average_bits(weight_bits, sens.w_size),
        "mean_act_bits": mean_act_bits(act_bits, sens),
        "act_absmax": ranges,
        "bos_aware": bool(bos_aware),
        "bos_embedding": (sens.bos_embedding.tolist() if bos_aware and sens.bos_embedding is not None
                          else None),
    }


def uniform_config(sens: Sensitivity, w_bits: int, a_bits: int) -> dict:
    """The naive baseline: every layer at the same widths, full ranges, no BOS handling, nothing kept FP."""
    names = sens.layers()
    return make_config(sens, {n: w_bits for n in names}, {n: a_bits for n in names}, budget=w_bits,
                       act_budget=a_bits, bos_aware=False, method="uniform")


def mixdq_config(sens: Sensitivity, w_budget: float, a_budget: float = 8.0, *, keep_fp_frac: float = 0.01,
                 bos_aware: bool = True, decoupled: bool = True, content_bits: Sequence[int] = CONTENT_W_BITS,
                 act_bits: Sequence[int] = (8,),
                 evaluate: Callable[[dict[str, int]], float] | None = None,
                 act_evaluate: Callable[[dict[str, int], dict[str, int]], float] | None = None) -> dict:
    """MixDQ's allocation: decoupled mixed-precision weights, then activations (:func:`allocate_acts`)
    over ``act_bits`` at ``a_budget`` mean bits with the top ``keep_fp_frac`` layers kept FP.
    ``act_evaluate(weight_bits, act_bits) -> error`` picks the activation split (weights chosen first)."""
    wbits = allocate_weights(sens, w_budget, decoupled=decoupled, evaluate=evaluate, content_bits=content_bits)
    pick = None if act_evaluate is None else (lambda abits: act_evaluate(wbits, abits))
    abits, _ = allocate_acts(sens, a_budget, keep_fp_frac=keep_fp_frac, bits=act_bits, decoupled=decoupled,
                             evaluate=pick)
    return make_config(sens, wbits, abits, budget=w_budget, act_budget=a_budget, bos_aware=bos_aware,
                       method="mixdq" if decoupled else "mixdq-sqnr-only")
