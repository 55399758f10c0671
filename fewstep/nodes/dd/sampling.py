"""DD samplers: 1 and 2 steps, the teacher-involved mode, and the naive one-step baselines of the paper's table.

Every sampler maps noise ε [B, L, D] (flow space) and captions [B, cond_dim] to tokens [B, L]
(``code: LlamaGen/autoregressive/sample/eval_fewstep.py``)::

    x = ε
    for t in t_list:                         # (0,) one step; (0, t₁) two steps
        X_t = [codeword(x_<t), ε_≥t]         # keep the first t predicted tokens, the ORIGINAL noise after
        x_≥t = argmax logits(X_t)            # (or the nearest codeword of the continuous head)

Teacher-involved (``eval_combine_sample.py``): one DD step, keep its first n tokens, let the teacher continue
the flow map with the same noise from n to t₁, then one DD step from t₁: 1 + (t₁ − n) + 1 network calls.

Naive baselines (what DD is compared with, §4 "onestep*"): every position drawn independently from its
marginal, and one parallel teacher pass over such a draft (each position sampled from the teacher's
conditional given the draft's prefix instead of its own).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fewstep.nodes.core.ar.sampling import cfg_logits, draw_tokens
from fewstep.nodes.dd.generator import DDGenerator, partial_inputs
from fewstep.nodes.dd.teacher import teacher_flow_tokens
from fewstep.nodes.zoo.ar.models import ARTransformer

HEADS = ("logits", "continuous")


def dd_step(generator: DDGenerator, tokens: Tensor, noise: Tensor, t: int, cond: Tensor, head: str) -> Tensor:
    """One DD call from X_t: tokens [B, L] with positions < t kept and the rest predicted."""
    if head not in HEADS:
        raise ValueError(f"DD head must be one of {HEADS}, got {head!r}")
    logits, cont = generator(partial_inputs(tokens, noise, t, generator.book), t, cond)
    if head == "logits":
        pred = logits.argmax(-1)
    else:                                                               # nearest codeword of the continuous output
        pred = torch.cdist(cont.float(), generator.book[None].float()).argmin(-1)
    keep = torch.arange(tokens.shape[1], device=tokens.device)[None] < t
    return torch.where(keep, tokens, pred)


@torch.no_grad()
def sample_dd(generator: DDGenerator, noise: Tensor, cond: Tensor, t_list: tuple[int, ...] = (0,),
              head: str = "logits") -> Tensor:
    """DD sampling with one network call per entry of ``t_list`` (ascending, starting at 0)."""
    length = noise.shape[1]
    if not t_list or t_list[0] != 0 or list(t_list) != sorted(set(t_list)) or t_list[-1] >= length:
        raise ValueError(f"DD steps t_list must be ascending, start at 0 and stay below L={length}, got {t_list}")
    tokens = torch.zeros(noise.shape[:2], dtype=torch.long, device=noise.device)
    for t in t_list:
        tokens = dd_step(generator, tokens, noise, t, cond, head)
    return tokens


@torch.no_grad()
def sample_dd_teacher(generator: DDGenerator, teacher: ARTransformer, noise: Tensor, cond: Tensor, *,
                      dd_prefix: int, switch: int, cfg_scale: float = 1.0, flow_steps: int = 32,
                      head: str = "logits") -> Tensor:
    """DD step → keep ``dd_prefix`` tokens → teacher continues to ``switch`` → DD step from ``switch``.

    ``switch = L`` lets the teacher finish the image (no second DD step)."""
    length = noise.shape[1]
    if not 0 <= dd_prefix <= switch <= length:
        raise ValueError(f"teacher-involved DD: need 0 <= dd_prefix ({dd_prefix}) <= switch ({switch}) <= L ({length})")
    tokens = dd_step(generator, torch.zeros(noise.shape[:2], dtype=torch.long, device=noise.device), noise, 0,
                     cond, head) if dd_prefix else None
    prefix = None if tokens is None else tokens[:, :dd_prefix]
    tokens = teacher_flow_tokens(teacher, noise, cond, generator.book, cfg_scale=cfg_scale, flow_steps=flow_steps,
                                 prefix=prefix, until=switch)
    if switch == length:
        return tokens
    padded = torch.cat([tokens, tokens.new_zeros(tokens.shape[0], length - switch)], 1)
    return dd_step(generator, padded, noise, switch, cond, head)


def dd_network_calls(t_list: tuple[int, ...]) -> int:
    return len(t_list)


def teacher_involved_calls(dd_prefix: int, switch: int, length: int) -> int:
    """Network calls of ``sample_dd_teacher``: DD (if a prefix is kept) + teacher positions + DD (if switch < L)."""
    return int(dd_prefix > 0) + (switch - dd_prefix) + int(switch < length)


@torch.no_grad()
def sample_marginals(marginals: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Baseline: every position drawn independently from its marginal ``marginals`` [B, L, K] (probabilities)."""
    b, length, k = marginals.shape
    flat = marginals.reshape(b * length, k).float()
    return torch.multinomial(flat, 1, generator=generator).view(b, length)


@torch.no_grad()
def empirical_marginals(samples: Tensor, vocab: int, smoothing: float = 0.0) -> Tensor:
    """Per-position token frequencies [B, L, K] of ``samples`` [B, M, L] (M teacher samples per caption)."""
    counts = torch.nn.functional.one_hot(samples, vocab).float().sum(1)                  # [B, L, K]
    counts = counts + smoothing
    return counts / counts.sum(-1, keepdim=True)


@torch.no_grad()
def sample_parallel(teacher: ARTransformer, draft: Tensor, cond: Tensor, *, cfg_scale: float = 1.0,
                    temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Baseline: one teacher pass over ``draft`` [B, L]; position i sampled from p(q_i | draft_<i, c)."""
    b = cond.shape[0]
    if cfg_scale == 1.0:
        logits = teacher(draft, cond).float()                                          # [B, L, K]
    else:
        null = torch.arange(2 * b, device=cond.device) >= b
        both = teacher(torch.cat([draft, draft]), torch.cat([cond, cond]), null=null).float()
        logits = cfg_logits(both[:b], both[b:], cfg_scale)
    flat = draw_tokens(logits.flatten(0, 1), temperature, generator)
    return flat.view(b, -1)
