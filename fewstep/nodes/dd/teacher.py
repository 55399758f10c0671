"""The AR teacher as DD's deterministic token source: its conditionals, position by position, through the flow.

``TeacherConditional`` is the ``NextLogProbs`` of ``pairs.flow_decode`` for an ``ARTransformer``: a KV cache
holds the caption prefix and the tokens so far, and each call runs one position (two batch halves when the
teacher's classifier-free guidance is on: ``u + s (c − u)`` on the logits, as its sampler does).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fewstep.nodes.core.ar.sampling import cfg_logits
from fewstep.nodes.dd.pairs import flow_decode
from fewstep.nodes.zoo.ar.models import ARTransformer


class TeacherConditional:
    """log p(q_i | q_<i, c) of an AR teacher for one batch of captions ``cond`` [B, cond_dim].

    Call it with the tokens generated so far [B, i] (i = 0, 1, 2 ... in order, or any prefix length on the
    first call: the prefix is then run in one pass); returns log-probabilities [B, K] of position i."""

    def __init__(self, teacher: ARTransformer, cond: Tensor, cfg_scale: float = 1.0) -> None:
        self.teacher, self.scale, self.b = teacher, cfg_scale, cond.shape[0]
        self.guided = cfg_scale != 1.0
        self.conds = torch.cat([cond, cond]) if self.guided else cond
        self.null = (torch.arange(2 * self.b, device=cond.device) >= self.b) if self.guided else None
        self.cache = teacher.new_cache(self.conds.shape[0])
        self.seen = -1                                   # sequence positions already in the cache (prefix = 0)

    @torch.no_grad()
    def __call__(self, tokens: Tensor) -> Tensor:
        i = tokens.shape[1]
        prev = torch.cat([tokens, tokens]) if self.guided else tokens
        if self.seen < 0:                                # prefix + the given tokens in one pass
            h = self.teacher.trunk(self.teacher.embed_tokens(prev), self.conds, self.cache, 0, null=self.null)
        elif i == self.seen:                             # one new token at sequence position i
            h = self.teacher.trunk(self.teacher.embed_tokens(prev[:, -1:]), self.conds, self.cache, i, null=self.null)
        else:
            raise ValueError(f"TeacherConditional: expected {self.seen} tokens, got {i} (call in order)")
        self.seen = i + 1
        logits = self.teacher.head(h[:, -1:])[:, 0].float()                 # [B', K]
        logits = cfg_logits(logits[:self.b], logits[self.b:] if self.guided else None, self.scale)
        return torch.log_softmax(logits, -1)


@torch.no_grad()
def teacher_flow_tokens(teacher: ARTransformer, noise: Tensor, cond: Tensor, book: Tensor, *,
                        cfg_scale: float = 1.0, flow_steps: int = 32, prefix: Tensor | None = None,
                        until: int | None = None) -> Tensor:
    """The teacher's deterministic tokens [B, until] for noise [B, L, D] (flow space) and captions [B, c].

    ``prefix`` [B, n]: tokens fixed already (positions 0..n−1, e.g. from a DD step); the teacher continues
    from position n to ``until`` (default L) with the same noise. Without a prefix this is DD's pair map."""
    n = 0 if prefix is None else prefix.shape[1]
    stop = noise.shape[1] if until is None else until
    if not 0 <= n <= stop <= noise.shape[1]:
        raise ValueError(f"teacher continuation: need 0 <= prefix ({n}) <= until ({stop}) <= L ({noise.shape[1]})")
    start = prefix if prefix is not None else torch.zeros(noise.shape[0], 0, dtype=torch.long, device=noise.device)
    if n == stop:
        return start
    conditional = TeacherConditional(teacher, cond, cfg_scale)
    first = conditional(start)                                             # log p of position n

    def next_log_probs(tokens: Tensor) -> Tensor:
        return first if tokens.shape[1] == n else conditional(tokens)

    rest = flow_decode(_Shifted(next_log_probs, start), noise[:, n:stop], book, flow_steps)
    return torch.cat([start, rest], 1)


class _Shifted:
    """``flow_decode`` counts positions from 0; the teacher's prefix of n tokens goes in front."""

    def __init__(self, inner: object, prefix: Tensor) -> None:
        self.inner, self.prefix = inner, prefix

    def __call__(self, tokens: Tensor) -> Tensor:
        return self.inner(torch.cat([self.prefix, tokens], 1))
