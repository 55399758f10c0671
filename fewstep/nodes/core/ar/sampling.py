"""Samplers of autoregressive image models: plain functions over the model objects of ``nodes.zoo.ar``.

``sample_ar``: next-token sampling of a decoder-only AR model (LlamaGen's ``generate``): temperature,
top-k, top-p (nucleus), classifier-free guidance on the logits, with or without a KV cache.

``sample_mar``: MAR's iterative masked generation (Li et al. 2024, Alg. in Sec. 3.3 / ``mar.py::sample_tokens``):
a random order, a cosine schedule of how many tokens stay masked, and at each iteration the per-token
diffusion head samples the tokens revealed there, with ``head_steps(k, K)`` diffusion steps at iteration k
(DiSA anneals this number; the default is a constant).

Randomness is drawn from a caller's ``torch.Generator`` only (on its own device, so a CPU generator
gives the same samples whatever device the model runs on), one uniform number per token for ``sample_ar``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from fewstep.nodes.zoo.ar.models import ARTransformer, MARModel


# ----------------------------------------------------------------------------- logits processing
def cfg_logits(cond_logits: torch.Tensor, uncond_logits: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Classifier-free guidance on logits (LlamaGen): ``u + s (c - u)``; at s = 1 exactly ``c``."""
    if scale == 1.0 or uncond_logits is None:
        return cond_logits
    return uncond_logits + scale * (cond_logits - uncond_logits)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k and outside the nucleus (smallest set of mass >= top_p) to -inf.

    ``top_k = 0`` and ``top_p = 1`` disable each filter; the most likely token always survives.
    logits: ``[B, K]``.
    """
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"filter_logits: need top_k >= 0 and 0 < top_p <= 1, got {top_k}, {top_p}")
    out = logits.clone()
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]                  # [B, 1]
        out[out < kth] = -math.inf
    if top_p < 1.0:
        sorted_logits, idx = out.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs                                        # mass of strictly better tokens
        drop_sorted = before >= top_p                                           # keeps the first token always
        out = out.masked_fill(drop_sorted.scatter(-1, idx, drop_sorted), -math.inf)
    return out


def draw_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of ``logits`` [B, K]: argmax at temperature 0, else inverse-CDF sampling of
    softmax(logits / T) with one uniform per row drawn from ``generator``."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(-1)
    cdf = (logits.float() / temperature).softmax(-1).cumsum(-1)                  # [B, K]
    gen_device = generator.device if generator is not None else cdf.device
    u = torch.rand(cdf.shape[0], generator=generator, device=gen_device).to(cdf.device) * cdf[:, -1]
    # first index with cdf > u: never a token of zero probability (its cdf equals its predecessor's)
    return torch.searchsorted(cdf, u[:, None], right=True).squeeze(-1).clamp_max(cdf.shape[-1] - 1)


# ----------------------------------------------------------------------------- AR
def _ar_inputs(cond: torch.Tensor, cfg_scale: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Batch rows of the trunk: [cond] or [cond; cond] with the second half flagged null (CFG)."""
    if cfg_scale == 1.0:
        return cond, None
    b = cond.shape[0]
    null = torch.arange(2 * b, device=cond.device) >= b
    return torch.cat([cond, cond]), null


@torch.no_grad()
def sample_ar(model: ARTransformer, cond: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0,
              top_p: float = 1.0, cfg_scale: float = 1.0, generator: torch.Generator | None = None,
              use_kv_cache: bool = True, callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Sample token grids ``[B, L]`` (long) of an ``ARTransformer``.

    Args:
        model: the AR model (eval mode).
        cond: caption sentence embeddings ``[B, cond_dim]``.
        temperature: softmax temperature (0 = greedy).
        top_k / top_p: logits filters (0 / 1.0 = off), applied after CFG and before the temperature.
        cfg_scale: classifier-free guidance on the logits against the learned null caption (1 = off).
        generator: source of all randomness.
        use_kv_cache: reuse keys/values of earlier positions (one position per step) instead of running
            the whole prefix again at every step; both give the same tokens.
        callback: called as ``callback(i, L)`` after token i.
    Returns:
        tokens ``[B, L]``.
    """
    cfg = model.config
    conds, null = _ar_inputs(cond, cfg_scale)
    b = cond.shape[0]
    tokens = torch.zeros(b, 0, dtype=torch.long, device=cond.device)
    cache = model.new_cache(conds.shape[0]) if use_kv_cache else None
    for i in range(cfg.seq_len):
        prev = tokens if null is None else torch.cat([tokens, tokens])                 # [B', i]
        if cache is None:                                                               # whole prefix
            h = model.trunk(model.embed_tokens(prev), conds, null=null)[:, -1]
        elif i == 0:                                                                    # caption prefix
            h = model.trunk(model.embed_tokens(prev), conds, cache, 0, null=null)[:, -1]
        else:                                                                           # position i only
            h = model.trunk(model.embed_tokens(prev[:, -1:]), conds, cache, i, null=null)[:, -1]
        logits = model.head(h[:, None])[:, 0].float()                                   # [B', K]
        logits = cfg_logits(logits[:b], logits[b:] if null is not None else None, cfg_scale)
        nxt = draw_tokens(filter_logits(logits, top_k, top_p), temperature, generator)
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        if callback is not None:
            callback(i, cfg.seq_len)
    return tokens


# ----------------------------------------------------------------------------- MAR
class HeadStepSchedule(Protocol):
    """Diffusion steps of the head at AR iteration ``iteration`` (0-based) of ``iterations``."""

    def __call__(self, iteration: int, iterations: int) -> int: ...


@dataclass(frozen=True)
class ConstantHeadSteps:
    """The same number of head steps at every AR iteration (MAR's default sampler)."""

    steps: int = 100

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"ConstantHeadSteps: steps must be >= 1, got {self.steps}")

    def __call__(self, iteration: int, iterations: int) -> int:
        return self.steps


def masked_count(iteration: int, iterations: int, seq_len: int, still_masked: int) -> int:
    """Tokens left masked after ``iteration`` (MAR): floor(L cos(pi/2 (k+1)/K)), kept in [1, masked - 1]
    except after the last iteration (0)."""
    if iteration >= iterations - 1:
        return 0
    n = math.floor(seq_len * math.cos(math.pi / 2 * (iteration + 1) / iterations))
    return max(1, min(still_masked - 1, n))


@torch.no_grad()
def sample_mar(model: MARModel, cond: torch.Tensor, *, iterations: int = 16,
               head_steps: HeadStepSchedule = ConstantHeadSteps(), temperature: float = 1.0,  # noqa: B008 (frozen)
               cfg_scale: float = 1.0, generator: torch.Generator | None = None, head_t_max: int | None = None,
               cfg_schedule: str = "linear",
               callback: Callable[[int, int, int, int], None] | None = None) -> torch.Tensor:
    """Sample continuous token grids ``[B, L, D]`` (tokenizer units) of a ``MARModel``.

    Args:
        model: the MAR model (eval mode).
        cond: caption sentence embeddings ``[B, cond_dim]``.
        iterations: K, AR iterations (1..L); each reveals a group of tokens in a random order.
        head_steps: diffusion steps of the per-token head at each iteration (``ConstantHeadSteps`` or a
            DiSA schedule).
        temperature: the head's noise temperature (MAR's tau).
        cfg_scale: guidance of the head's eps against the null caption; with ``cfg_schedule="linear"`` the
            scale at an iteration is ``1 + (s - 1) (L - masked) / L`` (MAR), else constant ``s``.
        generator: source of all randomness (orders and head noise).
        head_t_max: noisiest head timestep (None = 999; DiSA clips at 950).
        callback: ``callback(k, K, steps_k, n_tokens_k)`` after iteration k.
    """
    c = model.config
    if not 1 <= iterations <= c.seq_len:
        raise ValueError(f"sample_mar: iterations must be in 1..{c.seq_len}, got {iterations}")
    if cfg_schedule not in ("linear", "constant"):
        raise ValueError(f"sample_mar: cfg_schedule must be 'linear' or 'constant', got {cfg_schedule!r}")
    b, dev = cond.shape[0], cond.device
    gen_device = generator.device if generator is not None else dev
    order = torch.rand(b, c.seq_len, generator=generator, device=gen_device).argsort(-1).to(dev)  # [B, L]
    rank = order.argsort(-1)                                                            # position -> rank
    tokens = torch.zeros(b, c.seq_len, c.token_dim, device=dev)
    mask = torch.ones(b, c.seq_len, dtype=torch.bool, device=dev)
    conds, null = _ar_inputs(cond, cfg_scale)
    for k in range(iterations):
        n_left = masked_count(k, iterations, c.seq_len, int(mask[0].sum()))
        reveal = mask & (rank < c.seq_len - n_left)                                     # [B, L]
        z = model.encode(torch.cat([tokens] * (2 if null is not None else 1)),
                         torch.cat([mask] * (2 if null is not None else 1)), conds, null=null)
        steps = int(head_steps(k, iterations))
        scale = cfg_scale if cfg_schedule == "constant" else 1 + (cfg_scale - 1) * (c.seq_len - n_left) / c.seq_len
        if null is None or scale == 1.0:
            z_sel, scale = z[:b][reveal], 1.0                                            # [n, dim]
        else:
            z_sel = torch.cat([z[:b][reveal], z[b:][reveal]])                           # [2n, dim]: cond; null
        tokens[reveal] = model.sample_head(z_sel, steps, temperature=temperature, cfg_scale=scale,
                                           generator=generator, t_max=head_t_max).to(tokens.dtype)
        mask = mask & ~reveal
        if callback is not None:
            callback(k, iterations, steps, int(reveal[0].sum()))
    return tokens
