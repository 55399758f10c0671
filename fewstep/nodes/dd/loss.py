"""DD's training objective (arXiv 2412.17153 §3.3; the loss weights are ours, the paper's are not published).

For a pair (ε, q, c) and a start t drawn from the step set (``{0}``: 1-step; ``{0, t₁}``: 2-step), the
generator sees X_t = [c_{q_<t}, ε_≥t] and is trained on the positions it must produce, i ≥ t::

    L = mean_{i≥t} CE(logits_i, q_i)
      + λ_cont  · mean_{i≥t} |cont_i − c_{q_i}|²                      (continuous head, flow space)
      + λ_patch · mean_{i≥t} |dec(Σ_k softmax(logits_i)_k e_k) − dec(e_{q_i})|²   (decoded patch)

``e_k`` are the tokenizer's codebook latents and ``dec`` its patch decoder (PCA basis + mean): the last term
is the pixel error of the expected decoded patch, the paper's perceptual term (LPIPS on decoded images) made
local, since the patch tokenizer decodes each token on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fewstep.nodes.dd.generator import DDGenerator, partial_inputs
from fewstep.nodes.zoo.ar.tokenizer import VQTokenizer


@dataclass(frozen=True)
class DDLoss:
    """The objective above; call as ``loss(generator, batch, t) -> per-sample loss [B]``.

    Args:
        cont_weight: λ_cont of the continuous head.
        patch_weight: λ_patch of the decoded-patch term (0 = off; needs ``tokenizer``).
        tokenizer: the teacher's VQ tokenizer (decoder of the patch term).
    """

    cont_weight: float = 0.1
    patch_weight: float = 0.0
    tokenizer: VQTokenizer | None = None

    def __post_init__(self) -> None:
        if self.cont_weight < 0 or self.patch_weight < 0:
            raise ValueError(f"DD loss weights must be >= 0, got {self.cont_weight}, {self.patch_weight}")
        if self.patch_weight > 0 and self.tokenizer is None:
            raise ValueError("the decoded-patch loss needs the teacher's tokenizer (VQ decoder)")

    def __call__(self, generator: DDGenerator, batch: dict[str, Tensor], t: Tensor) -> Tensor:
        """``batch``: noise [B, L, D], tokens [B, L], cond [B, c]; ``t`` [B] data positions per row."""
        tokens, book = batch["tokens"], generator.book
        logits, cont = generator(partial_inputs(tokens, batch["noise"], t, book), t, batch["cond"])
        pos = torch.arange(tokens.shape[1], device=tokens.device)[None]
        w = (pos >= t[:, None]).float()                                                # [B, L]: trained positions
        per_pos = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten(), reduction="none").view_as(w)
        if self.cont_weight:
            per_pos = per_pos + self.cont_weight * (cont.float() - book[tokens]).pow(2).mean(-1)
        if self.patch_weight:
            per_pos = per_pos + self.patch_weight * self.patch_error(logits, tokens)
        return (per_pos * w).sum(1) / w.sum(1).clamp_min(1)

    def patch_error(self, logits: Tensor, tokens: Tensor) -> Tensor:
        """[B, L] mean squared pixel error of the expected decoded patch against the target token's patch."""
        tok = self.tokenizer
        expected = logits.float().softmax(-1) @ tok.codebook                           # [B, L, D] latents
        patches = expected @ tok.basis.T + tok.mean                                    # [B, L, 3·p²]
        target = tok.codebook[tokens] @ tok.basis.T + tok.mean
        return (patches - target).pow(2).mean(-1)


def draw_starts(batch: int, t_list: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """t per row, uniform over the step set ``t_list``."""
    return torch.tensor(t_list)[torch.randint(0, len(t_list), (batch,), generator=gen)]
