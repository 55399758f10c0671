"""DiSA's motivating measurement: the spread of the next tokens' conditional distribution falls as MAR proceeds.

At each AR iteration k of a MAR run (the same random order, mask schedule and linear CFG ramp as
``fewstep.nodes.core.ar.sampling.sample_mar``), the head draws S independent samples of every token revealed
at k from its conditional p(x | z_k). The variance across those S draws (per dimension, in tokenizer units,
averaged over dimensions and tokens) is the conditional variance at that progress; the run then continues with
the first draw, as a normal sample would. DiSA (arXiv 2505.20297, §3, Fig. 2b) reports this variance falling
with progress, which is why fewer head steps suffice later.
"""

from __future__ import annotations

import torch

from fewstep.nodes.core.ar.sampling import masked_count
from fewstep.nodes.zoo.ar.models import MARModel


@torch.no_grad()
def conditional_variance(model: MARModel, cond: torch.Tensor, *, iterations: int = 16, head_steps: int = 50,
                         samples: int = 16, cfg_scale: float = 1.0, temperature: float = 1.0,
                         generator: torch.Generator | None = None) -> list[dict[str, float]]:
    """Per iteration k: progress (fraction of tokens known before k), tokens revealed, variance of the head draws."""
    c = model.config
    b, dev = cond.shape[0], cond.device
    gen_device = generator.device if generator is not None else dev
    rank = torch.rand(b, c.seq_len, generator=generator, device=gen_device).argsort(-1).to(dev).argsort(-1)
    tokens = torch.zeros(b, c.seq_len, c.token_dim, device=dev)
    mask = torch.ones(b, c.seq_len, dtype=torch.bool, device=dev)
    guided = cfg_scale != 1.0
    conds = torch.cat([cond, cond]) if guided else cond
    null = (torch.arange(2 * b, device=dev) >= b) if guided else None
    out = []
    for k in range(iterations):
        known = 1 - float(mask[0].float().mean())
        n_left = masked_count(k, iterations, c.seq_len, int(mask[0].sum()))
        reveal = mask & (rank < c.seq_len - n_left)                                      # [B, L]
        reps = 2 if guided else 1
        z = model.encode(torch.cat([tokens] * reps), torch.cat([mask] * reps), conds, null=null)
        scale = 1 + (cfg_scale - 1) * (c.seq_len - n_left) / c.seq_len
        z_sel = z[:b][reveal]                                                             # [n, dim]
        n = len(z_sel)
        if guided:                                                                        # S copies of (cond; null)
            z_all = torch.cat([z_sel.repeat(samples, 1), z[b:][reveal].repeat(samples, 1)])
        else:
            z_all = z_sel.repeat(samples, 1)
        draws = model.sample_head(z_all, head_steps, temperature=temperature, cfg_scale=scale if guided else 1.0,
                                  generator=generator).view(samples, n, -1)               # [S, n, D]
        out.append({"iteration": k, "progress": known, "tokens": n // b,
                    "variance": float(draws.var(0, unbiased=True).mean())})
        tokens[reveal] = draws[0].to(tokens.dtype)
        mask = mask & ~reveal
    return out
